"""Your own text classification data as a text-to-text seqio Task.

A directory `DIR` holding `train.tsv` and `dev.tsv` (and optionally `test.tsv`), each line `text<TAB>label`
with no header, becomes the Task `cls_<basename of DIR>`: inputs `<basename> text: <text>`, targets the
label; labels are the sorted label set of all its splits (so that a dev label absent from training is
still a class, not the -1 of an invalid prediction); metrics are accuracy and macro-averaged F1.
Set `tasks.classification_dirs` (comma-separated) to register them.
"""

from __future__ import annotations

import functools
import os

from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax import files
from miniend_jax.errors import ConfigError
from miniend_jax.evaluation import metrics
from tasks import registry, task_files
from tasks.pretraining import text_to_text_features, vocabulary

SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}


def read_split(directory: str, split: str, on_bad_input: str = "skip") -> list[tuple[str, str]]:
    """The `(text, label)` rows of `split`. Every line is checked (once per file version and process):
    one that is not valid UTF-8, has no tab or more than one, or an empty text or label is a damaged row,
    skipped and counted or an error by `on_bad_input` (`tasks/task_files.py`); empty lines are no rows.

    Raises:
      ConfigError: a missing file, a damaged line under on_bad_input="error", or no row left.
    """
    path = files.join(directory, SPLIT_FILES[split])
    if not files.isfile(path):
        raise ConfigError(f"classification data {directory!r} has no {SPLIT_FILES[split]} for split {split!r}; "
                          "write `text<TAB>label` lines there.")
    return list(_read_rows(*task_files.file_version(path), split, on_bad_input))


@functools.lru_cache(maxsize=64)
def _read_rows(path: str, size: int, mtime_ns: int, split: str, on_bad_input: str) -> tuple[tuple[str, str], ...]:
    del size, mtime_ns  # part of the cache key only: a rewritten file is read again
    bad = task_files.BadRows(path, f"{task_name(os.path.dirname(path))} {split}", on_bad_input,
                             "write each line as text<TAB>label (one tab; no tab inside the text)")
    rows = []
    for number, text, problem in task_files.read_lines(path):
        if problem is None and not text.strip():
            continue
        fields = text.split("\t")
        if problem is None and len(fields) != 2:
            problem = "has no tab" if len(fields) == 1 else f"has {len(fields) - 1} tabs"
        if problem is None and not (fields[0].strip() and fields[1].strip()):
            problem = "has an empty text" if not fields[0].strip() else "has an empty label"
        if problem is not None:
            bad.add(number, problem)
            continue
        rows.append((fields[0], fields[1]))
    bad.report(len(rows) + len(bad))
    if not rows:
        raise ConfigError(f"{path} holds no `text<TAB>label` lines ({len(bad)} damaged lines skipped).")
    return tuple(rows)


def _format(x, *, name: str):
    return {"inputs": tf.strings.join([f"{name} text:", x["text"]], separator=" "), "targets": x["label"]}


def _postprocess(output, example=None, is_target=False, *, labels: tuple[str, ...]):
    del example, is_target
    output = output.decode() if isinstance(output, bytes) else output
    return labels.index(output) if output in labels else -1


def check_labels_fit(labels, spiece_model: str, targets_length: int, extra_ids: int, what: str) -> None:
    """Raises a `ConfigError` when a label does not fit `targets_length` tokens with EOS: a truncated label
    can never be decoded back, so every prediction would be scored invalid while the loss looks fine."""
    vocab = vocabulary(spiece_model, extra_ids)
    longest = max(labels, key=lambda label: len(vocab.encode(label)))
    needed = len(vocab.encode(longest)) + 1
    if needed > targets_length:
        raise ConfigError(f"tasks.targets_length={targets_length} truncates the {what} label {longest!r} "
                          f"({needed} tokens with EOS in {spiece_model}); use tasks.targets_length >= {needed}.")


def task_name(directory: str) -> str:
    return "cls_" + os.path.basename(os.path.normpath(directory))


def labels_of(directory: str, on_bad_input: str = "skip") -> tuple[str, ...]:
    """The sorted label set of every split present in `directory` (rows read as `read_split` does)."""
    splits = [s for s, f in SPLIT_FILES.items() if files.isfile(files.join(directory, f))]
    return tuple(sorted({label for split in splits for _, label in read_split(directory, split, on_bad_input)}))


def register(directory: str, spiece_model: str, *, extra_ids: int = 100, on_bad_input: str = "skip") -> str:
    """Registers the Task of `directory` (once) and returns its name. Every line of its files is checked
    now (`read_split`): damaged ones are skipped and counted, or an error, by `on_bad_input`.

    Raises:
      ConfigError: see `read_split`.
    """
    name = task_name(directory)
    labels = labels_of(directory, on_bad_input)
    splits = [s for s, f in SPLIT_FILES.items() if files.isfile(files.join(directory, f))]

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        rows = read_split(directory, split, on_bad_input)
        return tf.data.Dataset.from_tensor_slices({"text": [t for t, _ in rows], "label": [l for _, l in rows]})

    registry.add_task(
        name, [registry.vocabulary_key(spiece_model, extra_ids), files.absolute(directory), labels, splits,
               on_bad_input, [task_files.file_version(files.join(directory, SPLIT_FILES[s])) for s in splits]],
        source=seqio.FunctionDataSource(dataset_fn, splits=splits),
        preprocessors=[seqio.map_over_dataset(functools.partial(_format, name=name[4:])),
                       seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=text_to_text_features(spiece_model, extra_ids),
        postprocess_fn=functools.partial(_postprocess, labels=labels), metric_fns=[metrics.accuracy, metrics.f1_macro])
    return name


# The questions `inputs.py` asks every Task family (`inputs.TASK_FAMILIES`); None: not one of this family's.
def _directories(config) -> list[str]:
    return [p.strip() for p in config.tasks.classification_dirs.split(",") if p.strip()]


def scores(name: str, config) -> tuple[list[str], str] | None:
    """(accuracy and macro-F1, accuracy) for a `cls_<folder>` Task, or None for another family's Task."""
    return (["accuracy", "f1_macro"], "accuracy") if name.startswith("cls_") else None


def train_files(name: str, config) -> list[str] | None:
    """`train.tsv` of the folder the Task was made from, or None for another family's Task."""
    if not name.startswith("cls_"):
        return None
    return [files.join(d, SPLIT_FILES["train"]) for d in _directories(config) if task_name(d) == name]
