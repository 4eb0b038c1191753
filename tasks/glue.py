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

import csv
import dataclasses
import functools
import json
import os
from typing import Callable

import numpy as np
from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax.errors import ConfigError
from miniend_jax.evaluation import metrics
from tasks import registry
from tasks.pretraining import check_downstream_source, text_to_text_features

csv.field_size_limit(1 << 24)


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
    candidates = [os.path.join(folder, stem + extension) for folder in _as_tuple(task.directory)
                  for stem in _as_tuple(task.splits[split]) for extension in (".tsv", ".jsonl")]
    for candidate in candidates:
        if os.path.isfile(os.path.join(directory, candidate)):
            return os.path.join(directory, candidate)
    files = " or ".join(stem + extension for stem in _as_tuple(task.splits[split]) for extension in (".tsv", ".jsonl"))
    folders = " or ".join(os.path.join(directory, folder) for folder in _as_tuple(task.directory))
    raise ConfigError(f"GLUE {task.name} split {split!r}: no {files} in {folders}; point the GLUE data directory "
                      "at the GLUE download layout, or use the TFDS source.")


def unlabelled(seqio_name: str, split: str, prefix: str = "glue") -> bool:
    """Whether `split` of the GLUE Task `seqio_name` has no labels: GLUE's test splits (`test`,
    `test_matched`, `test_mismatched`; AX is one), whose labels GLUE keeps for its server (TFDS and the
    download script give every row the label -1)."""
    return task_of(seqio_name, prefix) is not None and split.startswith("test")


def _label(task: GlueTask, raw) -> float | int:
    if task.labels is None:
        return float(raw)
    raw = str(raw).strip()
    if raw in task.labels:
        return task.labels.index(raw)
    if not raw.lstrip("-").isdigit():
        return -1
    if not -1 <= int(raw) < len(task.labels):  # -1: an unlabelled (test) row
        raise ValueError(f"label {raw} is neither one of {task.labels} nor an index of them")
    return int(raw)


def read_split(directory: str, task: GlueTask, split: str) -> list[dict]:
    """Rows of a local split as TFDS `glue` features: the text features, `label` and `idx`."""
    path = split_file(directory, task, split)
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.endswith(".jsonl"):
            records = [json.loads(line) for line in f if line.strip()]
        else:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = None if split in task.headerless else next(reader, None)
            records = [dict(zip(header, r)) if header else dict(enumerate(r)) for r in reader if r]
    for index, record in enumerate(records):
        try:
            row = {feature: record[feature] if feature in record else record[task.columns[feature]]
                   for feature in task.features}
            label = record.get("label", record.get(task.label_column, -1))
            row["label"] = _label(task, label)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{path} row {index + 1}: cannot read GLUE {task.name} fields ({e!r}); the file "
                              "does not have the GLUE layout.") from None
        row["idx"] = index
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path} holds no examples; check the GLUE data directory.")
    return rows


def _local_source(directory: str, task: GlueTask, rename: dict | None = None) -> seqio.DataSource:
    """A source over the local files; `rename` maps source split names to file splits."""
    label_dtype = tf.float32 if task.labels is None else tf.int64
    rename = rename or {s: s for s in task.splits}
    splits = [s for s, file_split in rename.items() if _exists(directory, task, file_split)]
    counts = {s: len(read_split(directory, task, rename[s])) for s in splits}

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        rows = read_split(directory, task, rename[split])
        columns = {f: [r[f] for r in rows] for f in task.features}
        columns["label"] = np.asarray([r["label"] for r in rows], label_dtype.as_numpy_dtype)
        columns["idx"] = np.arange(len(rows), dtype=np.int64)
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
def _source(task: GlueTask, source: str, data_dir: str, tfds_data_dir: str | None):
    if source == "local":
        return _local_source(data_dir, task)
    return seqio.TfdsDataSource(tfds_name=f"glue/{task.tfds_config}:2.0.0", tfds_data_dir=tfds_data_dir)


def register(spiece_model: str, *, source: str = "local", data_dir: str = "../shared/data/glue",
             tfds_data_dir: str | None = None, extra_ids: int = 100, prefix: str = "glue") -> list[str]:
    """Registers `<prefix>_<task>` for the nine tasks and AX, MNLI's matched and mismatched tasks, the
    mixtures `<prefix>` (proportional, over the tasks with training data), `<prefix>_equal` and
    `<prefix>_submission` (the Tasks with a `test` split); returns the task names registered. Local tasks
    with no file on disk are not registered (`check_split` names the file to provide)."""
    check_downstream_source(source, "tasks.glue_source")
    features = text_to_text_features(spiece_model, extra_ids)
    definition = [registry.vocabulary_key(spiece_model, extra_ids), source,
                  os.path.abspath(data_dir) if source == "local" else tfds_data_dir]
    names = []
    for task in TASKS.values():
        name = f"{prefix}_{task.name}"
        if source == "local" and not any(_exists(data_dir, task, s) for s in task.splits):
            continue  # nothing of it on disk (e.g. QQP offline); `check_split` names the missing file
        names.append(name)
        registry.add_task(
            name, definition + [name], source=_source(task, source, data_dir, tfds_data_dir),
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
            data = _local_source(data_dir, task, rename=rename)
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
