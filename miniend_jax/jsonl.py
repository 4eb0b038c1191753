"""JSON files a run reads back: append-only JSONL (`metrics.jsonl`, `times.jsonl`) that survives a writer
killed mid-line, and single JSON objects (a workdir's `config.json`, a HF `generation_config.json`)."""

from __future__ import annotations

import json

from miniend_jax import files


def read_jsonl(path: str) -> list[dict]:
    """The JSON objects of an append-only JSONL file (`metrics.jsonl`, `times.jsonl`), skipping a line a
    kill cut short (what follows it on that line is lost too; the writers start a new line first).

    Raises:
      OSError: the file cannot be read.
    """
    rows = []
    for line in files.read_bytes(path).decode("utf-8", errors="replace").split("\n"):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def append_jsonl(path: str, row: dict) -> None:
    """Appends `row` as one line, first ending a line a killed writer left unfinished."""
    last = files.last_byte(path)
    files.append_text(path, ("\n" if last not in (b"", b"\n") else "") + json.dumps(row) + "\n")


def read_json_object(path: str) -> dict:
    """The JSON object in `path`.

    Raises:
      OSError: the file cannot be opened.
      ValueError: it is not UTF-8, not JSON, or not an object (the message says which).
    """
    try:
        value = json.loads(files.read_text(path))
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
