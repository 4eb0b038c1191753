"""Summarization as T5 text-to-text seqio Tasks: CNN/DailyMail, XSum and SAMSum.

Format (T5's `summarize` preprocessor): inputs `summarize: <document>`, targets the reference summary.
Metrics: ROUGE-1/2/L and ROUGE-Lsum F-measure with stemming (`evaluation.metrics.rouge`).

Sources: TFDS (`cnn_dailymail:3.4.0`, `xsum:1.1.0`, `samsum:1.0.0`: the real-user path, data prepared with
TFDS beforehand), or local files. The local layout is that of ../shared/data, which holds samples only,
so each local split is a file and an optional row range:

    summ_cnn_dailymail  train = validation_first1000.csv rows [0, 900), validation = rows [900, 1000),
                        test = frank_cnndm_test_subset.jsonl (250 test articles)
    summ_xsum           test = frank_xsum_test_subset.jsonl (251 test articles; references lower-cased)
    summ_samsum         train = the validation split's rows [0, 718), validation = rows [718, 818),
                        test = the test split (rows [818, 1637))

No official training split is available offline; the local "train" splits are slices of official
validation sets, and say so in their names here. Files read: csv with a header, or jsonl.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os

import numpy as np
from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax.errors import ConfigError
from miniend_jax.evaluation import metrics
from tasks import registry
from tasks.pretraining import check_downstream_source, text_to_text_features

csv.field_size_limit(1 << 24)


@dataclasses.dataclass(frozen=True)
class LocalSplit:
    file: str                        # relative to the data directory
    document: str                    # column / field of the document
    summary: str                     # column / field of the reference
    rows: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class SummarizationTask:
    name: str
    tfds_name: str
    tfds_document: str
    tfds_summary: str
    local: dict                      # split -> LocalSplit
    local_dir: str                   # folder under the data directory


TASKS = {t.name: t for t in (
    SummarizationTask(
        "cnn_dailymail", "cnn_dailymail:3.4.0", "article", "highlights",
        {"train": LocalSplit("validation_first1000.csv", "article", "highlights", (0, 900)),
         "validation": LocalSplit("validation_first1000.csv", "article", "highlights", (900, 1000)),
         "test": LocalSplit("frank_cnndm_test_subset.jsonl", "article", "reference")}, "cnn_dailymail"),
    SummarizationTask(
        "xsum", "xsum:1.1.0", "document", "summary",
        {"test": LocalSplit("frank_xsum_test_subset.jsonl", "article", "reference")}, "xsum"),
    SummarizationTask(
        "samsum", "samsum:1.0.0", "dialogue", "summary",
        {"train": LocalSplit("samsum_validation_and_test.csv", "dialogue", "summary", (0, 718)),
         "validation": LocalSplit("samsum_validation_and_test.csv", "dialogue", "summary", (718, 818)),
         "test": LocalSplit("samsum_validation_and_test.csv", "dialogue", "summary", (818, 1637))}, "samsum"),
)}


def read_split(data_dir: str, task: SummarizationTask, split: str) -> list[dict]:
    """[{"document", "summary"}] of a local split, or a `ConfigError` naming what is missing."""
    if split not in task.local:
        raise ConfigError(f"{task.name} has no local split {split!r} (local splits: {', '.join(task.local)}); "
                          "use one of those, or the TFDS source.")
    spec = task.local[split]
    path = os.path.join(data_dir, task.local_dir, spec.file)
    if not os.path.isfile(path):
        raise ConfigError(f"{task.name} split {split!r} needs {path}; point the summarization data directory "
                          "at a folder with that layout (e.g. ../shared/data), or use the TFDS source.")
    with open(path, encoding="utf-8", newline="") as f:
        records = [json.loads(line) for line in f if line.strip()] if path.endswith(".jsonl") else list(csv.DictReader(f))
    if spec.rows is not None:
        records = records[spec.rows[0]:spec.rows[1]]
    try:
        rows = [{"document": r[spec.document], "summary": r[spec.summary]} for r in records]
    except KeyError as e:
        raise ConfigError(f"{path} has no field {e}; expected {spec.document!r} and {spec.summary!r}.") from None
    if not rows:
        raise ConfigError(f"{path} (rows {spec.rows}) holds no examples.")
    return rows


def _local_source(data_dir: str, task: SummarizationTask) -> seqio.DataSource:
    splits = [s for s in task.local if os.path.isfile(os.path.join(data_dir, task.local_dir, task.local[s].file))]
    counts = {s: len(read_split(data_dir, task, s)) for s in splits}

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        rows = read_split(data_dir, task, split)
        return tf.data.Dataset.from_tensor_slices(
            {"document": [r["document"] for r in rows], "summary": [r["summary"] for r in rows],
             "idx": np.arange(len(rows), dtype=np.int64)})

    return seqio.FunctionDataSource(dataset_fn, splits=splits, num_input_examples=counts)


def summarize(x: dict, *, document: str, summary: str) -> dict:
    return {"inputs": tf.strings.join(["summarize:", x[document]], separator=" "), "targets": x[summary]}


def postprocess(output, example=None, is_target: bool = False):
    del example, is_target
    return output.decode() if isinstance(output, bytes) else output


def register(spiece_model: str, *, source: str = "local", data_dir: str = "../shared/data",
             tfds_data_dir: str | None = None, extra_ids: int = 100, prefix: str = "summ") -> list[str]:
    """Registers `<prefix>_cnn_dailymail`, `<prefix>_xsum` and `<prefix>_samsum` (local: those whose files
    exist); returns the names registered."""
    check_downstream_source(source, "tasks.summarization_source")
    features = text_to_text_features(spiece_model, extra_ids)
    names = []
    for task in TASKS.values():
        name = f"{prefix}_{task.name}"
        if source == "local":
            data = _local_source(data_dir, task)
            if not data.splits:
                continue
            keys = ("document", "summary")
        else:
            data = seqio.TfdsDataSource(tfds_name=task.tfds_name, tfds_data_dir=tfds_data_dir)
            keys = (task.tfds_document, task.tfds_summary)
        names.append(name)
        registry.add_task(
            name, [registry.vocabulary_key(spiece_model, extra_ids), source,
                   os.path.abspath(data_dir) if source == "local" else tfds_data_dir, name],
            source=data,
            preprocessors=[seqio.map_over_dataset(functools.partial(summarize, document=keys[0], summary=keys[1])),
                           seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
            output_features=features, postprocess_fn=postprocess, metric_fns=[metrics.rouge])
    return names


def check_split(name: str, split: str, *, source: str = "local", data_dir: str = "../shared/data",
                prefix: str = "summ") -> None:
    """Raises a `ConfigError` naming the missing file when `split` of task `name` is not on disk."""
    suffix = name[len(prefix) + 1:] if name.startswith(prefix + "_") else None
    if source == "local" and suffix in TASKS:
        read_split(data_dir, TASKS[suffix], split)
