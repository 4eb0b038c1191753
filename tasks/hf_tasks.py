"""Downstream Tasks from Hugging Face `datasets` datasets (`tasks.hf`).

Each entry `tasks.hf.<name>` of the config becomes the seqio Task `hf_<name>`:

    c.tasks.hf.sst2 = dict(
        path="data/sst2",                     # a save_to_disk directory, or files: "data/sst2/{split}.parquet"
        splits=dict(train="train", validation="validation"),   # seqio split -> the dataset's split
        inputs="sst2 sentence: {sentence}",   # str.format templates over the dataset's columns
        targets="{label}",
        label_names="negative,positive",      # "": a ClassLabel column's names, or its values as text
        metrics="accuracy,f1_macro")          # names in `miniend_jax.evaluation.metrics.METRICS`

`path` is a directory written by `Dataset.save_to_disk`/`DatasetDict.save_to_disk`, or comma-separated file
patterns of `.parquet`, `.jsonl`/`.json`, `.csv` or `.arrow` files in which `{split}` stands for the dataset's split
name. An empty `splits` maps `train`, `validation` and `test` to the splits of those names that exist.

The kind of Task follows from its target and metrics:
- classification: `targets` is one column (`"{label}"`) holding class labels (a `ClassLabel`, or integers
  named by `label_names`, or any values, whose sorted set over all splits is the label set) and the metrics
  score labels (accuracy, f1, f1_macro, matthews_corrcoef). Targets are the label names, and a prediction
  is postprocessed to its label's index (-1 for text that is no label: wrong, as in T5);
- regression: the metrics are correlations (pearson_corrcoef, spearman_corrcoef) over a numeric target; a
  prediction is read as a float (-1.0 when it is no number), as T5 does for STS-B;
- text (e.g. summarization scored by rouge): predictions are compared as text.

A `ClassLabel` column renders as its label names in every template. The rows are read once per process
and split, formatted in Python, and fed to seqio as a `FunctionDataSource` (downstream sets fit in
memory; pretraining corpora go through `tasks/hf_text.py` instead).

Bad input stops at registration, before training, with a `ConfigError` that names `tasks.hf.<name>.<field>`
and the fix: no dataset at the path, an unknown split, an empty split, a template column the dataset does
not have (its columns are listed), a column whose values a template cannot render (lists, dicts), a label
index outside `label_names`, a correlation metric over text, an unknown metric; a `.jsonl` or `.csv` line
`datasets` cannot parse (not UTF-8 or JSON, a csv record with too many fields) is named by file and line.
Damaged rows (no value in a column a template uses; label -1, unlabelled, outside the `test` split) are
named by file and line (or row) and skipped and counted, or stop the run, by `data.on_bad_input`
(`tasks/task_files.py`).
A classification split whose every label is missing (a negative index: GLUE's test splits) is decoded by
`mode=infer` but not scored (`unlabelled`; evaluate and finetune refuse it).
"""

from __future__ import annotations

import functools
import json
import string
from typing import Any, Mapping

import ml_collections
from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax import files
from miniend_jax.errors import ConfigError
from miniend_jax.evaluation import metrics
from tasks import hf_text, registry, task_files
from tasks.pretraining import text_to_text_features

PREFIX = "hf_"
SPLITS = ("train", "validation", "test")
LABEL_METRICS = frozenset({"accuracy", "f1", "f1_macro", "matthews_corrcoef"})
CORRELATION_METRICS = frozenset({"pearson_corrcoef", "spearman_corrcoef"})
SPEC_FIELDS = ("path", "splits", "inputs", "targets", "label_names", "metrics")


def _is_mapping(value) -> bool:
    return isinstance(value, (Mapping, ml_collections.ConfigDict))


def task_name(name: str) -> str:
    return PREFIX + name


def specs(config) -> dict[str, Mapping]:
    """{short name: spec} of `config.tasks.hf`."""
    hf = config.tasks.get("hf") or {}
    return {name: hf[name] for name in hf}


def _field(name: str, field: str) -> str:
    return f"tasks.hf.{name}.{field}"


def metric_names(spec: Mapping) -> list[str]:
    return [m.strip() for m in str(spec.get("metrics", "")).split(",") if m.strip()]


def label_names(spec: Mapping) -> tuple[str, ...]:
    return tuple(n.strip() for n in str(spec.get("label_names", "")).split(",") if n.strip())


def template_columns(template: str, where: str) -> list[str]:
    """The columns a `str.format` template names (`"{premise} {hypothesis}"` -> premise, hypothesis).

    Raises:
      ConfigError: the template is malformed, or uses positional (`{}`) fields.
    """
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as error:
        raise ConfigError(f"{where}={template!r} is not a valid template ({error}); write columns as "
                          "{column}, and a literal brace as {{ or }}.") from error
    columns = [f.split(".")[0].split("[")[0] for f in fields]
    if any(not c or c.isdigit() for c in columns):
        raise ConfigError(f"{where}={template!r} has a positional field; name a column, e.g. {{sentence}}.")
    return list(dict.fromkeys(columns))


def check_spec(name: str, spec: Any) -> None:
    """The settings of `tasks.hf.<name>` have the right types, templates parse and metrics exist (checked
    before anything is registered or written).

    Raises:
      ConfigError: naming the field and the fix.
    """
    if not name.isidentifier():
        raise ConfigError(f"tasks.hf.{name}: use a name of letters, digits and '_' (it becomes the Task hf_{name}).")
    if not _is_mapping(spec):
        raise ConfigError(f"tasks.hf.{name}={spec!r}: give a dict of path, inputs, targets and metrics "
                          "(tasks/hf_tasks.py shows one).")
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        raise ConfigError(f"tasks.hf.{name} has unknown field(s) {', '.join(unknown)}; the fields are "
                          f"{', '.join(SPEC_FIELDS)}.")
    for field in ("path", "inputs", "targets"):
        if not isinstance(spec.get(field), str) or not spec.get(field):
            raise ConfigError(f"{_field(name, field)}={spec.get(field)!r}: give a non-empty string "
                              "(tasks/hf_tasks.py shows an example).")
    for field in ("label_names", "metrics"):
        if not isinstance(spec.get(field, ""), str):
            raise ConfigError(f"{_field(name, field)}={spec.get(field)!r}: give a comma-separated string.")
    splits = spec.get("splits") or {}
    if not _is_mapping(splits) or not all(isinstance(v, str) and v for v in splits.values()):
        raise ConfigError(f"{_field(name, 'splits')}={splits!r}: give a dict of seqio split -> dataset split, "
                          "e.g. dict(train='train', validation='validation').")
    template_columns(spec["inputs"], _field(name, "inputs"))
    targets = template_columns(spec["targets"], _field(name, "targets"))
    names = metric_names(spec)
    if not names:
        raise ConfigError(f"{_field(name, 'metrics')} is empty; name the scores, e.g. 'accuracy,f1_macro' or 'rouge'.")
    for metric in names:
        if metric not in metrics.METRICS:
            raise ConfigError(f"{_field(name, 'metrics')}: unknown metric {metric!r}; use some of "
                              f"{', '.join(metrics.METRICS)}.")
    if label_names(spec) and (len(targets) != 1 or spec["targets"] != "{" + targets[0] + "}"):
        raise ConfigError(f"{_field(name, 'label_names')} names classes, but {_field(name, 'targets')}="
                          f"{spec['targets']!r} is not one column; set targets to '{{label}}' (the label column).")
    if set(names) & LABEL_METRICS and set(names) & CORRELATION_METRICS:
        raise ConfigError(f"{_field(name, 'metrics')}={spec['metrics']!r} mixes label scores with correlations; "
                          "a Task's targets are either classes or numbers.")


def score_names(spec: Mapping) -> list[str]:
    """The scores the Task reports (`rouge` reports rouge1, rouge2, rougeL, rougeLsum)."""
    return [score for metric in metric_names(spec) for score in metrics.METRIC_SCORES[metric]]


# --------------------------------------------------------------------------------------------
# Reading and formatting
# --------------------------------------------------------------------------------------------
def _is_pattern(path: str) -> bool:
    return "{split}" in path


def available_splits(path: str) -> list[str]:
    """The dataset's split names: those of a saved DatasetDict, or those of `SPLITS` whose files exist."""
    import datasets
    if _is_pattern(path):
        return [s for s in SPLITS if hf_text.matching_files(path.replace("{split}", s))]
    if not hf_text.is_saved_dataset(path):
        return []
    if files.exists(files.join(path, "dataset_dict.json")):
        return list(datasets.load_from_disk(path))
    return ["train"]  # a single saved Dataset


def split_map(name: str, spec: Mapping) -> dict[str, str]:
    """seqio split -> the dataset's split.

    Raises:
      ConfigError: nothing readable at the path, a mapped split the dataset does not have, or no split.
    """
    path, where = spec["path"], _field(name, "path")
    if not _is_pattern(path) and not hf_text.is_saved_dataset(path):
        raise ConfigError(f"{where}={path!r} is neither a save_to_disk directory nor a file pattern with "
                          "{split}; point it at one, e.g. 'data/sst2/{split}.parquet'.")
    present = available_splits(path)
    if _is_pattern(path) and not present:
        raise ConfigError(f"{where}={path!r} matches no file with {{split}} = {', '.join(SPLITS)}; write the "
                          "split files there, or point the path at them.")
    mapping = dict(spec.get("splits") or {s: s for s in SPLITS if s in present})
    for seqio_split, split in mapping.items():
        if split not in present:
            found = f"the splits {', '.join(present)}" if present else "no split"
            raise ConfigError(f"{_field(name, 'splits')}: {seqio_split} -> {split!r}, but {path} has {found}; "
                              "map each seqio split to one of them (or write the files).")
    if not mapping:
        raise ConfigError(f"{where}={path!r} has no train, validation or test split; set "
                          f"{_field(name, 'splits')} to map seqio splits to its splits.")
    return mapping


def source_key(path: str) -> list:
    """The dataset's files with sizes and modification times (a rewritten dataset is another source)."""
    if _is_pattern(path):
        return [hf_text.source_key(path.replace("{split}", s), s, "")["files"] for s in SPLITS]
    return hf_text.source_key(path, "", "")["files"]


def _record_lines(file: str) -> list[int] | None:
    """The line where each record of a JSON-lines (`.jsonl`) or `.csv` file starts (None for other files).

    Raises:
      ConfigError: naming the file and line, at a line `datasets` cannot parse: not valid UTF-8, not a
        JSON object, or a csv record with more fields than the header (no policy can skip inside a file
        `datasets` cannot read).
    """
    if not file.endswith((".jsonl", ".csv")):
        return None
    import csv
    lines = task_files.read_lines(file, keep_ends=file.endswith(".csv"))
    fix = "repair or delete that line; `datasets` cannot read the file past it"
    for number, _, problem in lines:
        if problem is not None:
            raise ConfigError(f"{file} line {number}: {problem}; {fix}.")
    if file.endswith(".jsonl"):
        starts = []
        for number, text, _ in lines:
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{file} line {number}: is not JSON ({error.msg}); {fix}.") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{file} line {number}: is not a JSON object; {fix}.")
            starts.append(number)
        return starts
    reader = csv.reader([text for _, text, _ in lines])
    starts, header, start = [], None, 1
    try:
        for fields in reader:
            first, start = start, reader.line_num + 1
            if header is None:
                header = fields
            elif fields and len(fields) > len(header):
                raise ConfigError(f"{file} line {first}: has {len(fields)} comma-separated fields, the header "
                                  f"{len(header)}; {fix} (quote a field that holds a comma).")
            elif fields:
                starts.append(first)
    except csv.Error as error:
        raise ConfigError(f"{file} line {reader.line_num}: the csv cannot be parsed ({error}); {fix}.") from None
    return starts


def _rows_of(dataset, path: str, split: str, field: str) -> list[dict]:
    try:
        return list(dataset)
    except Exception as error:  # pyarrow and datasets raise their own kinds on damaged files
        raise ConfigError(f"{field}={path!r}: `datasets` cannot read split {split!r} ({type(error).__name__}: "
                          f"{error}); check the files.") from error


@functools.lru_cache(maxsize=None)
def _read(path: str, split: str, key: str, field: str) -> tuple[list[dict], dict, list[str]]:
    del key  # part of the cache key only
    if not _is_pattern(path):
        dataset = hf_text.open_split(path, split, field=field)
        rows = _rows_of(dataset, path, split, field)
        return rows, dict(dataset.features or {}), [f"row {n} of split {split!r} of {path}"
                                                    for n in range(1, len(rows) + 1)]
    hf_text.open_split(path.replace("{split}", split), split, field=field)  # names a missing or empty split
    # File by file, so that a damaged row is named by its file and line (or row).
    rows, features, origins = [], {}, []
    for file in hf_text.matching_files(path.replace("{split}", split)):
        if files.getsize(file) == 0 or hf_text._parquet_rows([file]) == 0:
            continue
        starts = _record_lines(file)
        dataset = hf_text.open_split(file, split, field=field)
        file_rows = _rows_of(dataset, file, split, field)
        features = features or dict(dataset.features or {})
        rows += file_rows
        origins += [f"{file} line {starts[n]}" if starts and n < len(starts) else f"{file} row {n + 1}"
                    for n in range(len(file_rows))]
    return rows, features, origins


def read_split(name: str, spec: Mapping, split: str) -> tuple[list[dict], dict]:
    """The rows of the dataset's split `split` (dicts of column -> value, read once per process) and its
    features ({} when the files declare none).

    Raises:
      ConfigError: unreadable or empty split, naming the file and line `datasets` cannot read.
    """
    rows, features, _ = _read_with_origins(name, spec, split)
    return rows, features


def _read_with_origins(name: str, spec: Mapping, split: str) -> tuple[list[dict], dict, list[str]]:
    """`read_split`, and where each row is: "<file> line 12", "<file> row 3", "row 3 of split 'train' of <dir>"."""
    path = spec["path"]
    rows, features, origins = _read(path, split, repr(source_key(path)), _field(name, "path"))
    if not rows:
        raise ConfigError(f"split {split!r} of {_field(name, 'path')}={path!r} is empty; point "
                          f"{_field(name, 'splits')} at a split with examples.")
    return rows, features, origins


class _BadRow(Exception):
    """A damaged row: no value in a column a template uses, or no label (-1) outside the test split."""


def _class_names(feature) -> tuple[str, ...] | None:
    import datasets
    return tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None


class Layout:
    """How the rows of one `tasks.hf` entry become text-to-text examples and predictions become scores;
    built (and every template column checked) at registration.

    Raises:
      ConfigError: a template column the dataset lacks; a classification target that is not one column.
    """

    def __init__(self, name: str, spec: Mapping, mapping: Mapping[str, str], on_bad_input: str = "skip"):
        task_files.check_policy(on_bad_input)
        self.name, self.spec, self.mapping, self.on_bad_input = name, spec, dict(mapping), on_bad_input
        self._examples: dict[str, dict[str, list[str]]] = {}
        self.inputs_columns = template_columns(spec["inputs"], _field(name, "inputs"))
        self.targets_columns = template_columns(spec["targets"], _field(name, "targets"))
        first_rows, features = read_split(name, spec, next(iter(self.mapping.values())))
        columns = list(features) or list(first_rows[0])
        for field, used in (("inputs", self.inputs_columns), ("targets", self.targets_columns)):
            for column in used:
                if column not in columns:
                    raise ConfigError(f"{_field(name, field)}={spec[field]!r} names the column {column!r}, which "
                                      f"{spec['path']} does not have (its columns: {', '.join(columns)}); use one "
                                      "of those.")
        self.class_names = {c: n for c, f in features.items() if (n := _class_names(f)) is not None}
        scores = set(metric_names(spec))
        self.kind = ("classification" if scores & LABEL_METRICS or label_names(spec)
                     else "regression" if scores & CORRELATION_METRICS else "text")
        self.labels: tuple[str, ...] = ()
        if self.kind == "classification":
            column = self.targets_columns[0]
            if len(self.targets_columns) != 1 or spec["targets"] != "{" + column + "}":
                raise ConfigError(f"{_field(name, 'metrics')}={spec['metrics']!r} scores class labels, but "
                                  f"{_field(name, 'targets')}={spec['targets']!r} is not one column; set targets "
                                  "to the label column alone, e.g. '{label}', or score text with 'rouge'.")
            if label_names(spec):
                self.class_names[column] = label_names(spec)
            # Without names, the label set is every value of the column over all splits (so that a
            # validation label absent from training is still a class).
            self.labels = self.class_names.get(column) or tuple(sorted(
                {self._value(column, row[column]) for split in self.mapping.values()
                 for row in read_split(name, spec, split)[0] if row.get(column) is not None} - {"<unk>"}))

    def _value(self, column: str, value):
        """A template's value: a class label's name, a number as is (format specs apply), else text."""
        if value is None:
            raise _BadRow(f"has no value in column {column!r}")
        names = self.class_names.get(column)
        if names is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"column {column!r} of {self.spec['path']} holds {type(value).__name__} values, "
                                  f"but {_field(self.name, 'label_names')} names classes by index; give integer "
                                  "labels, or leave label_names empty to use the values as labels.")
            if value < 0:
                return "<unk>"  # an unlabelled row (e.g. GLUE's test splits), as T5 writes it
            if value >= len(names):
                raise ConfigError(f"column {column!r} of {self.spec['path']} holds the label {value}, but there "
                                  f"are {len(names)} label names ({', '.join(names)}); name every class in "
                                  f"{_field(self.name, 'label_names')}.")
            return names[value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value if self.kind != "classification" or column != self.targets_columns[0] else str(value)
        if not isinstance(value, (str, bool)):
            raise ConfigError(f"column {column!r} of {self.spec['path']} holds {type(value).__name__} values, "
                              "which a template cannot write as text; use a column of text, numbers or class "
                              "labels.")
        return str(value)

    def examples(self, split: str) -> dict[str, list[str]]:
        """{"inputs": [...], "targets": [...]} of seqio split `split`, one string per row. A row with no
        value in a column the templates use, or a label outside the names, is a damaged row: skipped and
        counted, or an error naming its file and line, by `data.on_bad_input` (`tasks/task_files.py`).

        Raises:
          ConfigError: a column of values a template cannot write, a non-numeric target of correlation
            metrics, a damaged row under on_bad_input="error", or no row left.
        """
        if split in self._examples:
            return self._examples[split]
        rows, _, origins = _read_with_origins(self.name, self.spec, self.mapping[split])
        if self.kind == "regression":
            column = self.targets_columns[0]
            value = next((r.get(column) for r in rows if r.get(column) is not None), None)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{_field(self.name, 'metrics')}={self.spec['metrics']!r} correlates numbers, "
                                  f"but column {column!r} of {self.spec['path']} holds {type(value).__name__}; "
                                  "score it with accuracy or rouge, or point targets at a numeric column.")
        render = lambda template, columns, row: template.format(**{c: self._value(c, row.get(c)) for c in columns})
        bad = task_files.BadRows(self.spec["path"], f"{task_name(self.name)} {split}", self.on_bad_input,
                                 f"give that row a value in every column {_field(self.name, 'inputs')} and "
                                 f"{_field(self.name, 'targets')} use (and a label of {_field(self.name, 'label_names')}), "
                                 "or delete it")
        examples = {"inputs": [], "targets": []}
        label_column = self.targets_columns[0] if self.kind == "classification" else None
        for row, origin in zip(rows, origins):
            try:
                value = row.get(label_column)
                if (split != "test" and label_column in self.class_names and isinstance(value, int)
                        and value < 0):
                    raise _BadRow(f"has no label ({value} in column {label_column!r}; only the test split is "
                                  "unlabelled)")
                inputs = render(self.spec["inputs"], self.inputs_columns, row)
                targets = render(self.spec["targets"], self.targets_columns, row)
            except _BadRow as error:
                bad.add(origin, str(error))
                continue
            examples["inputs"].append(inputs)
            examples["targets"].append(targets)
        bad.report(len(rows))
        if not examples["inputs"]:
            raise ConfigError(f"split {split!r} of {_field(self.name, 'path')}={self.spec['path']!r} has no row "
                              f"left ({len(bad)} damaged rows skipped); repair the rows.")
        self._examples[split] = examples
        return examples

    def postprocess(self, output, example=None, is_target: bool = False):
        """Decoded text -> label index (-1: no label), float (-1.0: no number), or the text itself."""
        del example, is_target
        output = output.decode() if isinstance(output, bytes) else output
        if self.kind == "classification":
            return self.labels.index(output) if output in self.labels else -1
        if self.kind == "regression":
            try:
                return float(output)
            except ValueError:
                return -1.0
        return output


_LAYOUTS: dict[str, Layout] = {}  # Task name -> its layout, as registered in this process


def register(name: str, spec: Mapping, spiece_model: str, *, extra_ids: int = 100,
             on_bad_input: str = "skip") -> str:
    """Registers `hf_<name>` from its spec (reading the dataset once per process, every row checked now;
    damaged rows skipped and counted, or an error, by `on_bad_input`) and returns the name.

    Raises:
      ConfigError: bad settings or data (see the module docstring).
    """
    check_spec(name, spec)
    mapping = split_map(name, spec)
    layout = Layout(name, spec, mapping, on_bad_input)
    counts = {split: len(layout.examples(split)["inputs"]) for split in mapping}  # renders (checks) every row
    spec_key = {k: (v if isinstance(v, str) else dict(v or {})) for k, v in spec.items()}
    _LAYOUTS[task_name(name)] = layout

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        return tf.data.Dataset.from_tensor_slices(layout.examples(split))

    registry.add_task(
        task_name(name), [registry.vocabulary_key(spiece_model, extra_ids), spec_key, source_key(spec["path"]),
                          on_bad_input],
        source=seqio.FunctionDataSource(dataset_fn, splits=list(mapping), num_input_examples=counts),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=text_to_text_features(spiece_model, extra_ids),
        postprocess_fn=layout.postprocess,
        metric_fns=[metrics.METRICS[m] for m in metric_names(spec)])
    return task_name(name)


def unlabelled(task: str, split: str) -> bool:
    """Whether `split` of the registered classification Task `task` (`hf_<name>`) has no label at all: every
    target is `<unk>` (a negative class index, as GLUE's test splits on the HF hub have), so there is
    nothing to score."""
    layout = _LAYOUTS.get(task)
    if layout is None or layout.kind != "classification" or split not in layout.mapping:
        return False
    return all(target == "<unk>" for target in layout.examples(split)["targets"])


def labels(task: str) -> tuple[str, ...]:
    """The label names of the registered classification Task `task` (`hf_<name>`); () for other kinds."""
    layout = _LAYOUTS.get(task)
    return layout.labels if layout else ()


# The questions `inputs.py` asks every Task family (`inputs.TASK_FAMILIES`); None: not one of this family's.
def _spec(name: str, config) -> Mapping | None:
    return specs(config).get(name[len(PREFIX):]) if name.startswith(PREFIX) else None


def scores(name: str, config) -> tuple[list[str], str] | None:
    """(the Task's named scores, the first of them), or None for another family's Task."""
    spec = _spec(name, config)
    return None if spec is None else (score_names(spec), score_names(spec)[0])


def train_files(name: str, config) -> list[str] | None:
    """The files of the dataset split the Task trains on, or None for another family's Task."""
    spec = _spec(name, config)
    if spec is None:
        return None
    train = split_map(name[len(PREFIX):], spec).get("train", "train")
    return [row[0] for row in hf_text.source_key(spec["path"].replace("{split}", train), train, "")["files"]]
