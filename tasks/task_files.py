"""Reading a user's task files (GLUE, summarization, classification, HF datasets, `infer` inputs): lines
with their numbers, and one rule for damaged rows, `data.on_bad_input`.

A damaged row (a line that is not valid UTF-8 or not JSON, a TSV line with the wrong number of fields, a
missing label or text) either stops the run (`"error"`: a `ConfigError` naming the file, the line and
the fix) or is left out (`"skip"`: the file's count of skipped rows, out of the rows read, is printed with
the first damaged line, once per file version and process). The readers check every row when a Task's
source is built (at registration), so both happen before anything is compiled or trained.
"""

from __future__ import annotations

import codecs

from miniend_jax import files
from miniend_jax.errors import ConfigError

POLICIES = ("skip", "error")   # values of data.on_bad_input
SHOWN = 3                      # damaged lines named in a skip report


def check_policy(on_bad_input: str) -> None:
    """Raises:
      ConfigError: `on_bad_input` is not one of `POLICIES`.
    """
    if on_bad_input not in POLICIES:
        raise ConfigError(f"data.on_bad_input={on_bad_input!r}: use 'skip' (leave damaged rows out and count "
                          "them) or 'error' (stop at the first one).")


def file_version(path: str) -> tuple[str, int, int]:
    """(absolute path, size in bytes, modification time in ns or object generation): a rewritten file is
    read again."""
    version = files.version(path)
    return files.absolute(path), version["size"], version["version"]


def read_lines(path: str, keep_ends: bool = False) -> list[tuple[int, str, str | None]]:
    """The lines of a text file as `(number from 1, text, problem or None)`, the text without its "\\n" or
    "\\r\\n" (with it if `keep_ends`, as a csv reader needs them inside quoted fields); a UTF-8 byte-order
    mark is dropped, and a line that is not valid UTF-8 is decoded with U+FFFD and carries its problem ("is
    not valid UTF-8 (byte 7)"). A last empty line (after the final newline) is not listed.
    """
    data = files.read_bytes(path)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines = []
    for number, raw in enumerate(raw_lines, 1):
        if keep_ends:
            raw = raw + b"\n" if number < len(raw_lines) or data.endswith(b"\n") else raw
        else:
            raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            lines.append((number, raw.decode("utf-8"), None))
        except UnicodeDecodeError as error:
            lines.append((number, raw.decode("utf-8", errors="replace"),
                          f"is not valid UTF-8 (byte {error.start + 1})"))
    return lines


_REPORTED: set = set()  # (file version, what) already reported in this process


class BadRows:
    """The damaged rows of one file, under the policy `on_bad_input`.

    `add(line, problem)` raises at once under "error"; `report(rows_read)` prints the skip count (once per
    file version and `what` in a process). `fix` says how to repair a row ("write each line as
    text<TAB>label").

    Raises:
      ConfigError: from `add`, under on_bad_input="error": "<path> line <n>: <problem>; <fix>, or set ...".
    """

    def __init__(self, path: str, what: str, on_bad_input: str, fix: str):
        check_policy(on_bad_input)
        self.path, self.what, self.policy, self.fix = path, what, on_bad_input, fix
        self.lines: list[tuple[int | str, str]] = []

    def add(self, line: int | str, problem: str) -> None:
        """Notes the damaged row at `line`: a line number of the file, or a whole location ("row 12 of
        split 'train' of data/rte")."""
        where = f"line {line}" if isinstance(line, int) else line
        location = f"{self.path} {where}" if isinstance(line, int) else where
        if self.policy == "error":
            raise ConfigError(f"{location}: {problem}; {self.fix}, or set data.on_bad_input='skip' to leave such "
                              "rows out (they are counted).")
        self.lines.append((where, problem))

    def __len__(self) -> int:
        return len(self.lines)

    def message(self, rows_read: int) -> str:
        """The skip report: how many of `rows_read` rows were left out, where, and the fix."""
        shown = "; ".join(f"{where}: {problem}" for where, problem in self.lines[:SHOWN])
        more = f"; and {len(self.lines) - SHOWN} more" if len(self.lines) > SHOWN else ""
        return (f"input: {self.what}: skipped {len(self.lines)} of {rows_read} rows of {self.path} ({shown}{more}); "
                f"{self.fix}, or set data.on_bad_input='error' to stop at them.")

    def report(self, rows_read: int) -> None:
        """Prints `message` once per file version, unless no row was skipped."""
        if not self.lines:
            return
        key = (file_version(self.path) if files.exists(self.path) else self.path, self.what)
        if key in _REPORTED:
            return
        _REPORTED.add(key)
        print(self.message(rows_read), flush=True)
