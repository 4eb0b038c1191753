"""GLUE as T5 text-to-text seqio Tasks: the nine tasks and the diagnostic set AX, from TFDS `glue` or a
local GLUE directory.

Format (T5's `glue` preprocessor): the benchmark name, then each text feature as `name: text` in sorted
feature order; the target is the label's name (`<unk>` for unlabelled rows), and for STS-B the score
rounded to the nearest 0.2 with one decimal (`-1.0` for unlabelled rows, as T5 writes them):

    sst2 sentence: it 's a charming journey .               -> positive
    mnli hypothesis: Everyone likes it. premise: It is nice.  -> neutral
    stsb sentence1: A man is dancing. sentence2: A man dances. -> 4.8

Local directories are laid out as the GLUE download script leaves them: `<Task>/train.tsv`, `<Task>/dev.tsv`,
`<Task>/test.tsv` (MNLI: `dev_matched` / `dev_mismatched` / `test_matched` / `test_mismatched`; `.tsv` or
`.jsonl`; CoLA's train and dev files have no header, its test file has one) and AX as
`diagnostic/diagnostic.tsv` (or `AX.tsv`, the name GLUE serves it under, in `diagnostic/`, `AX/` or the
GLUE folder itself). Rows are numbered from 0 in
file order (`idx`, as TFDS numbers them), which is the `index` column of GLUE's test files.

Task names: `glue_<task>` (`glue_cola`, ..., `glue_mnli` with the splits `validation_matched`,
`validation_mismatched`, `test_matched` and `test_mismatched`, registered also as `glue_mnli_matched` /
`glue_mnli_mismatched` with splits `validation` and `test`), `glue_ax` (split `test` only, formatted as MNLI
like T5 does, to be decoded by an MNLI model), the proportional mixture `glue` over the tasks whose
training files exist, `glue_equal`, the same tasks but WNLI at equal rates (short finetuning runs:
proportional mixing gives SST-2 three quarters of the examples of the local tasks and RTE 3%, too few to
learn even its label words), and `glue_submission`, every Task with a `test` split (the eleven files of a
GLUE benchmark submission, `miniend_jax/glue_submission.py`).

Test splits have no labels (GLUE keeps them private; `unlabelled` says which splits): `mode=infer` decodes
them, the scoring modes refuse them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Callable

import numpy as np
from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax import files
from miniend_jax.errors import ConfigError
from miniend_jax.evaluation import metrics
from tasks import registry, task_files
from tasks.pretraining import check_downstream_source, text_to_text_features


@dataclasses.dataclass(frozen=True)
class GlueTask:
    name: str                        # the task suffix (`glue_<name>`), also T5's benchmark name unless `benchmark`
    directory: str | tuple[str, ...]  # folder(s) of the local GLUE layout, tried in order
    features: tuple[str, ...]        # text features, sorted (T5's order)
    labels: tuple[str, ...] | None   # class names by id; None: regression (STS-B)
    metric_fns: tuple[Callable, ...]  # () for a test-only set (AX), as in T5
    tfds_config: str
    columns: dict = dataclasses.field(default_factory=dict)  # feature -> local TSV column name
    label_column: str = "label"
    # split -> file stem(s) in the task's folder, tried in order
    splits: dict = dataclasses.field(default_factory=lambda: {"train": "train", "validation": "dev", "test": "test"})
    headerless: tuple[str, ...] = ()  # splits whose files have no header row
    benchmark: str = ""              # the name that starts the inputs; "": `name` (AX is cast as MNLI)

    @property
    def prefix(self) -> str:
        return self.benchmark or self.name

    @property
    def metric_names(self) -> list[str]:
        """The names of the task's scores in order (its metric functions applied to a tiny sample)."""
        return [name for fn in self.metric_fns for name in fn([0, 1, 1, 0], [0, 1, 0, 0])]

    @property
    def main_metric(self) -> str:
        """The metric that picks the best finetuning checkpoint (the first one GLUE reports); "" for AX."""
        names = self.metric_names
        return names[0] if names else ""


TASKS = {t.name: t for t in (
    GlueTask("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), (metrics.matthews_corrcoef,),
             "cola", columns={"sentence": 3}, label_column=1, headerless=("train", "validation")),
    GlueTask("sst2", "SST-2", ("sentence",), ("negative", "positive"), (metrics.accuracy,), "sst2"),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
             (metrics.f1_with_invalid, metrics.accuracy), "mrpc",
             columns={"sentence1": "#1 String", "sentence2": "#2 String"}, label_column="Quality"),
    GlueTask("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
             (metrics.f1_with_invalid, metrics.accuracy), "qqp", label_column="is_duplicate"),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), None,
             (metrics.pearson_corrcoef, metrics.spearman_corrcoef), "stsb", label_column="score"),
    GlueTask("mnli", "MNLI", ("hypothesis", "premise"), ("entailment", "neutral", "contradiction"),
             (metrics.accuracy,), "mnli", columns={"premise": "sentence1", "hypothesis": "sentence2"},
             label_column="gold_label",
             splits={"train": "train", "validation_matched": "dev_matched",
                     "validation_mismatched": "dev_mismatched", "test_matched": "test_matched",
                     "test_mismatched": "test_mismatched"}),
    GlueTask("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), (metrics.accuracy,),
             "qnli"),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), (metrics.accuracy,),
             "rte"),
    GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment"), (metrics.accuracy,),
             "wnli"),
    # The diagnostic set: a test set only, cast as MNLI (T5's `get_glue_text_preprocessor`).
    GlueTask("ax", ("diagnostic", "AX", ""), ("hypothesis", "premise"), ("entailment", "neutral", "contradiction"), (),
             "ax", columns={"premise": "sentence1", "hypothesis": "sentence2"},
             splits={"test": ("diagnostic", "AX")}, benchmark="mnli"),
)}
# MNLI's matched and mismatched sets as tasks of their own (TFDS configs glue/mnli_matched, _mismatched):
# name -> (base task, {split of the task: split of the base task}).
EVAL_ONLY = {"mnli_matched": ("mnli", {"validation": "validation_matched", "test": "test_matched"}),
             "mnli_mismatched": ("mnli", {"validation": "validation_mismatched", "test": "test_mismatched"})}


# --------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------
def _as_tuple(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def split_file(directory: str, task: GlueTask, split: str) -> str:
    """The local file of `split`, or a `ConfigError` naming what is missing."""
    if split not in task.splits:
        raise ConfigError(f"GLUE {task.name} has no split {split!r}; use one of {', '.join(task.splits)}.")
    candidates = [files.join(folder, stem + extension) for folder in _as_tuple(task.directory)
                  for stem in _as_tuple(task.splits[split]) for extension in (".tsv", ".jsonl")]
    for candidate in candidates:
        if files.isfile(files.join(directory, candidate)):
            return files.join(directory, candidate)
    names = " or ".join(stem + extension for stem in _as_tuple(task.splits[split]) for extension in (".tsv", ".jsonl"))
    folders = " or ".join(files.join(directory, folder) for folder in _as_tuple(task.directory))
    raise ConfigError(f"GLUE {task.name} split {split!r}: no {names} in {folders}; point the GLUE data directory "
                      "at the GLUE download layout, or use the TFDS source.")


def unlabelled(seqio_name: str, split: str, prefix: str = "glue") -> bool:
    """Whether `split` of the GLUE Task `seqio_name` has no labels: GLUE's test splits (`test`,
    `test_matched`, `test_mismatched`; AX is one), whose labels GLUE keeps for its server (TFDS and the
    download script give every row the label -1)."""
    return task_of(seqio_name, prefix) is not None and split.startswith("test")


def _label(task: GlueTask, raw) -> float | int:
    """A label as TFDS `glue` holds it: a class index (from a name or an index), or STS-B's score.

    Raises:
      ValueError: neither a class name nor an index of one (an unknown label is a damaged row, not the
        `<unk>` of an unlabelled test row), or a score that is no finite number.
    """
    if task.labels is None:
        score = float(raw)
        if not math.isfinite(score):
            raise ValueError(f"score {raw!r} is no finite number")
        return score
    raw = str(raw).strip()
    if raw in task.labels:
        return task.labels.index(raw)
    if not raw.isdigit() or int(raw) >= len(task.labels):
        raise ValueError(f"label {raw!r} is neither one of {', '.join(task.labels)} nor an index of them")
    return int(raw)


def _unlabelled(raw) -> bool:
    """No label: a missing or empty field, or TFDS's -1 of a test row."""
    return raw is None or str(raw).strip() in ("", "-1", "-1.0")


def read_split(directory: str, task: GlueTask, split: str, on_bad_input: str = "skip") -> list[dict]:
    """Rows of a local split as TFDS `glue` features: the text features, `label` and `idx` (0, 1, ... over
    the rows kept). Every row is checked (once per file version and process): a line that is not valid
    UTF-8 or not a JSON object, a TSV line whose fields do not match the header, a missing text field,
    and, except in the `test` split (unlabelled, label -1 as in TFDS), a missing or unknown label are
    damaged rows, skipped and counted or an error by `on_bad_input` (`tasks/task_files.py`).

    Raises:
      ConfigError: a missing file, a header without the task's columns, a damaged row under
        on_bad_input="error", or no row left.
    """
    path = split_file(directory, task, split)
    return list(_read_rows(*task_files.file_version(path), task.name, split, on_bad_input))


@functools.lru_cache(maxsize=8)  # registration counts every split; a run then reads one or two again
def _read_rows(path: str, size: int, mtime_ns: int, name: str, split: str, on_bad_input: str) -> tuple[dict, ...]:
    del size, mtime_ns  # part of the cache key only: a rewritten file is read again
    task = TASKS[name]
    labels = ", ".join(task.labels) if task.labels else "a score from 0 to 5"
    bad = task_files.BadRows(path, f"GLUE {task.name} {split}", on_bad_input,
                             f"repair or delete that row (GLUE {task.name} rows hold {', '.join(task.features)} "
                             f"and a label: {labels})")
    labelled = not split.startswith("test")  # GLUE's test splits are unlabelled (`unlabelled`)
    lines = task_files.read_lines(path)
    records = []  # (line number, the row's place among the file's rows, record)
    if path.endswith(".jsonl"):
        for number, text, problem in lines:
            if problem is None and not text.strip():
                continue
            ordinal = len(records) + len(bad)
            try:
                record = json.loads(text) if problem is None else None
            except json.JSONDecodeError as error:
                problem = f"is not JSON ({error.msg})"
                record = None
            if problem is None and not isinstance(record, dict):
                problem = "is not a JSON object"
            if problem is not None:
                bad.add(number, problem)
                continue
            records.append((number, ordinal, record))
    else:
        header = None
        if split not in task.headerless:
            if not lines:
                raise ConfigError(f"{path} is empty; check the GLUE data directory.")
            header = lines.pop(0)[1].split("\t")
            # A feature's column is its own name or the layout's (CoLA's test file names `sentence`).
            wanted = [f if f in header else task.columns.get(f, f) for f in task.features]
            absent = [c for c in wanted + ([task.label_column] if labelled else []) if c not in header]
            if absent:
                raise ConfigError(f"{path} line 1: the header has no column {', '.join(map(repr, absent))} (it has "
                                  f"{', '.join(header)}); use the GLUE download's {task.directory} files.")
        needed = 1 + max([task.columns.get(f, 0) for f in task.features] + [task.label_column]) if not header else 0
        for number, text, problem in lines:
            if problem is None and not text:
                continue
            ordinal = len(records) + len(bad)
            fields = text.split("\t")
            if problem is None and header and len(fields) != len(header):
                problem = f"has {len(fields)} tab-separated fields, the header {len(header)}"
            if problem is None and not header and len(fields) < needed:
                problem = f"has {len(fields)} tab-separated fields, GLUE {task.name} rows at least {needed}"
            if problem is not None:
                bad.add(number, problem)
                continue
            records.append((number, ordinal, dict(zip(header, fields)) if header else dict(enumerate(fields))))
    rows = []
    for number, ordinal, record in records:
        row = {}
        for feature in task.features:
            value = record.get(feature, record.get(task.columns.get(feature, feature)))
            if not isinstance(value, str):
                bad.add(number, f"has no text in {feature!r}" if value is None else f"{feature!r} is not text")
                break
            row[feature] = value
        else:
            raw = record.get("label", record.get(task.label_column))
            try:
                if _unlabelled(raw):
                    if labelled:
                        raise ValueError(f"no label (in {task.label_column!r}; only the test splits are unlabelled)")
                    row["label"] = -1.0 if task.labels is None else -1
                else:
                    row["label"] = _label(task, raw)
            except ValueError as error:
                bad.add(number, str(error))
                continue
            row["idx"] = ordinal  # the row's place in the file: the `index` column of GLUE's test files
            rows.append(row)
    bad.report(len(rows) + len(bad))
    if not rows:
        raise ConfigError(f"{path} holds no examples ({len(bad)} damaged rows skipped); check the GLUE data "
                          "directory.")
    return tuple(rows)


def _local_source(directory: str, task: GlueTask, rename: dict | None = None,
                  on_bad_input: str = "skip") -> seqio.DataSource:
    """A source over the local files (every row checked now, `read_split`); `rename` maps source split
    names to file splits."""
    label_dtype = tf.float32 if task.labels is None else tf.int64
    rename = rename or {s: s for s in task.splits}
    splits = [s for s, file_split in rename.items() if _exists(directory, task, file_split)]
    counts = {s: len(read_split(directory, task, rename[s], on_bad_input)) for s in splits}

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        rows = read_split(directory, task, rename[split], on_bad_input)
        columns = {f: [r[f] for r in rows] for f in task.features}
        columns["label"] = np.asarray([r["label"] for r in rows], label_dtype.as_numpy_dtype)
        columns["idx"] = np.asarray([r["idx"] for r in rows], np.int64)  # the row's place in the file
        return tf.data.Dataset.from_tensor_slices(columns)

    return seqio.FunctionDataSource(dataset_fn, splits=splits, num_input_examples=counts)


def _exists(directory, task, split) -> bool:
    try:
        split_file(directory, task, split)
        return True
    except ConfigError:
        return False


# --------------------------------------------------------------------------------------------
# T5's text-to-text format and postprocessing
# --------------------------------------------------------------------------------------------
def t5_format(x: dict, *, task: GlueTask) -> dict:
    parts = [task.prefix]
    for feature in task.features:
        parts += [f"{feature}:", x[feature]]
    if task.labels is None:
        target = tf.strings.as_string(tf.round(tf.cast(x["label"], tf.float32) * 5) / 5, precision=1)
    else:
        label = tf.cast(x["label"], tf.int32)
        names = tf.constant(task.labels)
        target = tf.where(label < 0, tf.constant("<unk>"), tf.gather(names, tf.maximum(label, 0)))
    return {"inputs": tf.strings.join(parts, separator=" "), "targets": target, "idx": x["idx"]}


def _preprocessors(task: GlueTask) -> list:
    return [seqio.map_over_dataset(functools.partial(t5_format, task=task)), seqio.preprocessors.tokenize,
            seqio.preprocessors.append_eos_after_trim]


def postprocess(output: str, example=None, is_target: bool = False, *, task: GlueTask):
    """Label text -> class id (-1 if it is no label) or, for STS-B, float (-1 if unreadable)."""
    del example, is_target
    output = output.decode() if isinstance(output, bytes) else output
    if task.labels is None:
        try:
            return float(output)
        except ValueError:
            return -1.0
    return task.labels.index(output) if output in task.labels else -1


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
def _source(task: GlueTask, source: str, data_dir: str, tfds_data_dir: str | None, on_bad_input: str = "skip"):
    if source == "local":
        return _local_source(data_dir, task, on_bad_input=on_bad_input)
    return seqio.TfdsDataSource(tfds_name=f"glue/{task.tfds_config}:2.0.0", tfds_data_dir=tfds_data_dir)


def register(spiece_model: str, *, source: str = "local", data_dir: str = "../shared/data/glue",
             tfds_data_dir: str | None = None, extra_ids: int = 100, prefix: str = "glue",
             on_bad_input: str = "skip") -> list[str]:
    """Registers `<prefix>_<task>` for the nine tasks and AX, MNLI's matched and mismatched tasks, the
    mixtures `<prefix>` (proportional, over the tasks with training data), `<prefix>_equal` and
    `<prefix>_submission` (the Tasks with a `test` split); returns the task names registered. Local tasks
    with no file on disk are not registered (`check_split` names the file to provide); every row of the
    local files is checked now, damaged ones skipped and counted or an error by `on_bad_input`."""
    check_downstream_source(source, "tasks.glue_source")
    features = text_to_text_features(spiece_model, extra_ids)
    definition = [registry.vocabulary_key(spiece_model, extra_ids), source,
                  files.absolute(data_dir) if source == "local" else tfds_data_dir, on_bad_input]
    names = []
    for task in TASKS.values():
        name = f"{prefix}_{task.name}"
        if source == "local" and not any(_exists(data_dir, task, s) for s in task.splits):
            continue  # nothing of it on disk (e.g. QQP offline); `check_split` names the missing file
        names.append(name)
        registry.add_task(
            name, definition + [name], source=_source(task, source, data_dir, tfds_data_dir, on_bad_input),
            preprocessors=_preprocessors(task),
            output_features=features, postprocess_fn=functools.partial(postprocess, task=task),
            metric_fns=list(task.metric_fns))
    for eval_name, (base, rename) in EVAL_ONLY.items():
        name = f"{prefix}_{eval_name}"
        task = TASKS[base]
        if source == "local" and not any(_exists(data_dir, task, split) for split in rename.values()):
            continue
        names.append(name)
        if source == "tfds":
            data = seqio.TfdsDataSource(tfds_name=f"glue/{base}:2.0.0", tfds_data_dir=tfds_data_dir, splits=rename)
        else:
            data = _local_source(data_dir, task, rename=rename, on_bad_input=on_bad_input)
        registry.add_task(
            name, definition + [name], source=data,
            preprocessors=_preprocessors(task),
            output_features=features, postprocess_fn=functools.partial(postprocess, task=task),
            metric_fns=list(task.metric_fns))
    trainable = [n for n in names if "train" in seqio.get_mixture_or_task(n).splits]
    if trainable:
        registry.add_mixture(prefix, trainable, default_rate=seqio.mixing_rate_num_examples)
    equal = [n for n in trainable if n != f"{prefix}_wnli"]
    if equal:
        registry.add_mixture(f"{prefix}_equal", equal, default_rate=1.0)
    testable = [n for n in names if "test" in seqio.get_mixture_or_task(n).splits]
    if testable:
        registry.add_mixture(f"{prefix}_submission", testable, default_rate=1.0)
    return names


def check_split(name: str, split: str, *, source: str = "local", data_dir: str = "../shared/data/glue",
                prefix: str = "glue") -> None:
    """Raises a `ConfigError` naming the file to provide when `split` of GLUE task `name` is not on disk."""
    task = task_of(name, prefix)
    if task is None or source != "local":
        return
    suffix = name[len(prefix) + 1:]
    if suffix in EVAL_ONLY:
        rename = EVAL_ONLY[suffix][1]
        if split not in rename:
            raise ConfigError(f"GLUE {suffix} has no split {split!r}; use one of {', '.join(rename)}.")
        split = rename[split]
    split_file(data_dir, task, split)


def check_targets_length(name: str, spiece_model: str, targets_length: int, extra_ids: int = 100,
                         prefix: str = "glue") -> None:
    """Raises a `ConfigError` when a label of GLUE task `name` does not fit `targets_length` tokens."""
    from tasks.classification import check_labels_fit
    task = task_of(name, prefix)
    if task is not None:
        check_labels_fit(task.labels or ("5.0", "0.2"), spiece_model, targets_length, extra_ids, task.name)


def task_of(seqio_name: str, prefix: str = "glue") -> GlueTask | None:
    """The `GlueTask` behind a registered name (`glue_mnli_matched` -> MNLI), or None."""
    suffix = seqio_name[len(prefix) + 1:] if seqio_name.startswith(prefix + "_") else None
    if suffix in TASKS:
        return TASKS[suffix]
    if suffix in EVAL_ONLY:
        return TASKS[EVAL_ONLY[suffix][0]]
    return None


def results_by_glue_task(results: dict, prefix: str = "glue") -> dict:
    """{seqio task name: scores} -> {GLUE task name: scores}, for the aggregate scores."""
    return {name[len(prefix) + 1:]: scores for name, scores in results.items()
            if task_of(name, prefix) is not None}


# The questions `inputs.py` asks every Task family (`inputs.TASK_FAMILIES`); None: not one of this family's.
def scores(name: str, config) -> tuple[list[str], str] | None:
    """(the score names a GLUE Task reports, its main one), or None for another family's Task."""
    task = task_of(name)
    return None if task is None else (list(task.metric_names), task.main_metric)


def train_files(name: str, config) -> list[str] | None:
    """The local file the `train` split of a GLUE Task is read from ([] from TFDS or without a train
    split), or None for another family's Task."""
    task, t = task_of(name), config.tasks
    if task is None:
        return None
    return [split_file(t.glue_dir, task, "train")] if t.glue_source == "local" and "train" in task.splits else []
