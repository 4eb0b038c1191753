"""Append-only JSONL files (`metrics.jsonl`, `times.jsonl`) that survive a writer killed mid-line."""

from __future__ import annotations

import json
import os


def read_jsonl(path: str) -> list[dict]:
    """The JSON objects of an append-only JSONL file (`metrics.jsonl`, `times.jsonl`), skipping a line a
    kill cut short (what follows it on that line is lost too; the writers start a new line first).

    Raises:
      OSError: the file cannot be read.
    """
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def append_jsonl(path: str, row: dict) -> None:
    """Appends `row` as one line, first ending a line a killed writer left unfinished."""
    unfinished = False
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            unfinished = f.read(1) != b"\n"
    with open(path, "a") as f:
        f.write(("\n" if unfinished else "") + json.dumps(row) + "\n")
