"""The files of a GLUE benchmark submission from `mode=infer` predictions on GLUE's test splits.

    python -m miniend_jax.glue_submission --predictions=workdirs/glue_test/predictions.jsonl \
        --out=workdirs/glue_submission [--glue_dir=../shared/data/glue] [--fill_invalid]

`--predictions`: comma-separated `predictions.jsonl` files of `mode=infer` on GLUE Tasks' test splits
(`infer.input=glue_submission` decodes all of them at once, or one Task per run, e.g. `glue_ax` with the
MNLI model); each line's `task`, `split`, `idx` and `prediction` are used. `--out`: the folder that gets one
TSV per GLUE test set, named as the server wants them (CoLA.tsv, SST-2.tsv, MRPC.tsv, STS-B.tsv, QQP.tsv,
MNLI-m.tsv, MNLI-mm.tsv, QNLI.tsv, RTE.tsv, WNLI.tsv, AX.tsv): a header `index<TAB>prediction`, then one
row per example in `idx` order (the row number of the test file, which is its `index` column).

The rules are T5's (`t5/scripts/prepare_glue_submission.py`): a prediction is postprocessed as in
evaluation (label text -> class id, STS-B text -> float); RTE, QNLI, MNLI-m/mm (and AX, which T5's script
leaves out: the server wants MNLI's labels for it) are written as label names (entailment / not_entailment,
entailment / neutral / contradiction), CoLA, SST-2, MRPC, QQP and WNLI as class ids (0/1; WNLI 1 =
entailment), STS-B as the float, clipped to [0, 5], the range of its scores.

A prediction that is no label (or no number, for STS-B) has no answer the server accepts: it is an error
naming the file and line, unless `--fill_invalid` writes the Task's most frequent valid prediction (STS-B:
the median) in its place and says how many. With `--glue_dir` (default `../shared/data/glue`, "" to skip),
each Task's predictions must cover its local test file, row for row. Existing files in `--out` are never
replaced. Bad input is a one-line `error:` on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import statistics
import sys

from miniend_jax import files
from miniend_jax.errors import ConfigError, MiniEndError

# (Task suffix, split) -> the server's file name (T5's FILE_NAME_MAP, plus AX).
FILES = {("cola", "test"): "CoLA", ("sst2", "test"): "SST-2", ("mrpc", "test"): "MRPC", ("stsb", "test"): "STS-B",
         ("qqp", "test"): "QQP", ("mnli_matched", "test"): "MNLI-m", ("mnli", "test_matched"): "MNLI-m",
         ("mnli_mismatched", "test"): "MNLI-mm", ("mnli", "test_mismatched"): "MNLI-mm", ("qnli", "test"): "QNLI",
         ("rte", "test"): "RTE", ("wnli", "test"): "WNLI", ("ax", "test"): "AX"}
SERVER_FILES = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI-m", "MNLI-mm", "QNLI", "RTE", "WNLI", "AX")
USES_TEXT = frozenset({"RTE", "QNLI", "MNLI-m", "MNLI-mm", "AX"})  # label names; the others class ids
STSB_RANGE = (0.0, 5.0)


def _read(path: str, prefix: str) -> dict[str, tuple]:
    """{server file: (GlueTask, its split in the local files, [(idx, prediction text, line number)])} of one
    predictions file."""
    from tasks import glue
    if not files.isfile(path):
        raise ConfigError(f"--predictions: {path} is not a file; give the predictions.jsonl of mode=infer.")
    from tasks import task_files
    found = {}
    for number, line, problem in task_files.read_lines(path):
        if problem is None and not line.strip():
            continue
        try:
            if problem is not None:
                raise ValueError(problem)
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("is not a JSON object")
        except ValueError as error:
            raise ConfigError(f"{path} line {number} {getattr(error, 'msg', error)}; give the predictions.jsonl "
                              "of mode=infer.") from None
        task, split = row.get("task"), row.get("split")
        if not isinstance(task, str) or glue.task_of(task, prefix) is None:
            raise ConfigError(f"{path} line {number} is no prediction of a GLUE Task (task={task!r}); decode "
                              "GLUE's test splits with --config.mode=infer --config.infer.input=glue_submission "
                              "--config.tasks.eval_split=test.")
        suffix = task[len(prefix) + 1:]
        name = FILES.get((suffix, split))
        if name is None:
            raise ConfigError(f"{path} line {number}: {task} split {split!r} is no GLUE test set (the server "
                              "scores the test splits only); decode with --config.tasks.eval_split=test.")
        if type(row.get("idx")) is not int or not isinstance(row.get("prediction"), str):  # (JSON true is no idx)
            raise ConfigError(f"{path} line {number} has no integer `idx` or no `prediction`; decode again "
                              "with this version's mode=infer.")
        file_split = glue.EVAL_ONLY[suffix][1][split] if suffix in glue.EVAL_ONLY else split
        found.setdefault(name, (glue.task_of(task, prefix), file_split, []))[2].append(
            (row["idx"], row["prediction"], number))
    return found


def _values(name: str, task, rows: list, path: str, fill_invalid: bool) -> tuple[list, int]:
    """The server's values for `rows` ((idx, text, line number)) of file `name` of GlueTask `task`, and how
    many invalid predictions were filled."""
    from tasks import glue
    values = [glue.postprocess(text, task=task) for _, text, _ in rows]
    if task.labels is None:  # STS-B: T5 reads -1.0 for text that is no number
        valid = [v for (_, text, _), v in zip(rows, values) if _is_number(text)]
        invalid = [i for i, (_, text, _) in enumerate(rows) if not _is_number(text)]
    else:
        valid = [v for v in values if v >= 0]
        invalid = [i for i, v in enumerate(values) if v < 0]
    if invalid and not fill_invalid:
        _, text, number = rows[invalid[0]]
        raise ConfigError(f"{path} line {number}: {text!r} is no {name} answer ({len(invalid)} of {len(rows)} "
                          f"{name} predictions are not; the server needs one per example); decode with a better "
                          "model, or pass --fill_invalid to write the most frequent prediction in their place.")
    if invalid:
        if not valid:
            raise ConfigError(f"{path}: no {name} prediction is valid, so --fill_invalid has nothing to fill in; "
                              "decode with a finetuned model.")
        fill = (statistics.median(valid) if task.labels is None
                else collections.Counter(valid).most_common(1)[0][0])
        for i in invalid:
            values[i] = fill
    if task.labels is None:
        low, high = STSB_RANGE
        return [min(max(float(v), low), high) for v in values], len(invalid)
    return [task.labels[v] if name in USES_TEXT else v for v in values], len(invalid)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def write_submission(predictions: list[str], out: str, *, glue_dir: str | None = "../shared/data/glue",
                     fill_invalid: bool = False, prefix: str = "glue") -> dict[str, int]:
    """Writes `<out>/<server name>.tsv` for each GLUE test set in the `predictions` files (see the module
    docstring for the rules); returns {file name: rows written}.

    Raises:
      ConfigError: a missing or unreadable file, a line of another Task or split, an `idx` twice, a Task
        whose predictions do not cover its local test file (with `glue_dir`), an invalid prediction without
        `fill_invalid`, an output file that exists; all before anything is written.
    """
    from tasks import glue
    if not predictions:
        raise ConfigError("--predictions is empty; give the predictions.jsonl files of mode=infer.")
    if not out:
        raise ConfigError("--out is empty; give the folder for the submission files.")
    groups, sources = {}, {}
    for path in predictions:
        for name, (task, split, found) in _read(path, prefix).items():
            if name in groups:
                raise ConfigError(f"{path} and {sources[name]} both hold {name} predictions; give each test set once.")
            groups[name], sources[name] = (task, split, sorted(found)), path
    if not groups:
        raise ConfigError(f"{', '.join(predictions)} hold no predictions; decode GLUE's test splits with mode=infer.")
    tables, filled = {}, {}
    for name, (task, split, found) in groups.items():
        indices = [idx for idx, _, _ in found]
        if len(set(indices)) != len(indices):
            twice = next(i for i in indices if indices.count(i) > 1)
            raise ConfigError(f"{sources[name]}: {name} idx {twice} is predicted twice; decode each test set once.")
        if glue_dir:
            try:  # the server scores every row of the test file: a damaged row stops here, named
                expected = len(glue.read_split(glue_dir, task, split, on_bad_input="error"))
            except ConfigError as error:
                raise ConfigError(f"--glue_dir={glue_dir!r}: {error} Set --glue_dir to the GLUE folder the test "
                                  "splits were decoded from (tasks.glue_dir), or to '' to skip this check.") from None
            if indices != list(range(expected)):
                raise ConfigError(f"{sources[name]}: {len(indices)} {name} predictions, but the test file in "
                                  f"{glue_dir} has {expected} rows; decode the whole split (infer.examples=0), or "
                                  "set --glue_dir to the folder it was decoded from.")
        values, filled[name] = _values(name, task, found, sources[name], fill_invalid)
        tables[name] = list(zip(indices, values))
    existing = [files.join(out, f"{name}.tsv") for name in tables if files.exists(files.join(out, f"{name}.tsv"))]
    if existing:
        raise ConfigError(f"{', '.join(existing)} already exist(s); give another --out, or move them away.")
    files.makedirs(out)
    for name, table in tables.items():
        text = io.StringIO()
        writer = csv.writer(text, delimiter="\t", lineterminator="\n")
        writer.writerow(["index", "prediction"])
        writer.writerows(table)
        files.write_text(files.join(out, f"{name}.tsv"), text.getvalue())
    missing = [f"{n}.tsv" for n in SERVER_FILES if n not in tables]
    print("glue_submission: " + ", ".join(
        f"{n}.tsv {len(tables[n])} rows" + (f" ({filled[n]} invalid filled)" if filled[n] else "")
        for n in SERVER_FILES if n in tables) + f" in {out}"
          + (f"; the server also wants {', '.join(missing)}" if missing else ""), flush=True)
    return {f"{n}.tsv": len(t) for n, t in tables.items()}


def main(argv: list[str] | None = None) -> None:
    from absl import flags
    flags.DEFINE_list("predictions", [], "Comma-separated predictions.jsonl files of mode=infer on GLUE test splits.")
    flags.DEFINE_string("out", "", "Folder for the submission files (CoLA.tsv, ..., AX.tsv).")
    flags.DEFINE_string("glue_dir", "../shared/data/glue", "GLUE folder the test splits were decoded from, to "
                        "check each Task is complete; '' skips the check.")
    flags.DEFINE_bool("fill_invalid", False, "Write the most frequent prediction (STS-B: the median) in place of "
                      "predictions that are no answer, instead of stopping.")
    argv = list(argv if argv is not None else sys.argv)
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(__doc__.strip() + "\n\nflags:\n" + flags.FLAGS.module_help(sys.modules[__name__]))
        sys.exit(0)
    try:
        flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error} (`--help` lists the flags)", file=sys.stderr)
        sys.exit(2)
    f = flags.FLAGS
    try:
        write_submission(f.predictions, f.out, glue_dir=f.glue_dir or None, fill_invalid=f.fill_invalid)
    except MiniEndError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
