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

import numpy as np
from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax import files
from miniend_jax.errors import ConfigError
from miniend_jax.evaluation import metrics
from tasks import registry, task_files
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


def read_split(data_dir: str, task: SummarizationTask, split: str, on_bad_input: str = "skip") -> list[dict]:
    """[{"document", "summary"}] of a local split, or a `ConfigError` naming what is missing. Every record
    of the file is checked (once per file version and process): a jsonl line that is not valid UTF-8 or
    not a JSON object, a csv record with more or fewer fields than the header, and a document or summary
    that is missing or not text are damaged rows, skipped and counted or an error by `on_bad_input`
    (`tasks/task_files.py`). A split's row range counts the file's records, damaged ones included, so that
    splits of one file stay apart.

    Raises:
      ConfigError: an unknown split, a missing file or field, a damaged row under on_bad_input="error",
        or no row left.
    """
    if split not in task.local:
        raise ConfigError(f"{task.name} has no local split {split!r} (local splits: {', '.join(task.local)}); "
                          "use one of those, or the TFDS source.")
    spec = task.local[split]
    path = files.join(data_dir, task.local_dir, spec.file)
    if not files.isfile(path):
        raise ConfigError(f"{task.name} split {split!r} needs {path}; point the summarization data directory "
                          "at a folder with that layout (e.g. ../shared/data), or use the TFDS source.")
    return list(_read_rows(*task_files.file_version(path), task.name, split, on_bad_input))


def _records(path: str) -> tuple[list[tuple[int, object, str | None]], list[str] | None]:
    """The file's records as (first line, record or None, problem or None), and a csv file's header."""
    lines = task_files.read_lines(path, keep_ends=not path.endswith(".jsonl"))
    if path.endswith(".jsonl"):
        records = []
        for number, text, problem in lines:
            if problem is None and not text.strip():
                continue
            record = None
            if problem is None:
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as error:
                    problem = f"is not JSON ({error.msg})"
            if problem is None and not isinstance(record, dict):
                problem, record = "is not a JSON object", None
            records.append((number, record, problem))
        return records, None
    invalid = {number: problem for number, _, problem in lines if problem is not None}
    reader = csv.reader([text for _, text, _ in lines], strict=True)
    records, header, start = [], None, 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise ConfigError(f"{path} line {reader.line_num}: the csv cannot be parsed ({error}); repair the "
                              "file (quote fields that hold commas, quotes or newlines).") from None
        end = reader.line_num
        problems = [invalid[n] for n in range(start, end + 1) if n in invalid]
        first, start = start, end + 1
        if header is None:
            header = fields
            continue
        if not fields:
            continue
        problem = problems[0] if problems else None
        if problem is None and len(fields) != len(header):
            problem = f"has {len(fields)} comma-separated fields, the header {len(header)}"
        records.append((first, dict(zip(header, fields)) if problem is None else None, problem))
    return records, header


@functools.lru_cache(maxsize=32)
def _read_rows(path: str, size: int, mtime_ns: int, name: str, split: str, on_bad_input: str) -> tuple[dict, ...]:
    del size, mtime_ns  # part of the cache key only: a rewritten file is read again
    task = TASKS[name]
    spec = task.local[split]
    records, header = _records(path)
    if header is not None and (spec.document not in header or spec.summary not in header):
        raise ConfigError(f"{path} has no field {(spec.document if spec.document not in header else spec.summary)!r}; "
                          f"expected {spec.document!r} and {spec.summary!r}.")
    if spec.rows is not None:
        records = records[spec.rows[0]:spec.rows[1]]
    kind = "jsonl line" if header is None else "csv record"
    bad = task_files.BadRows(path, f"{task.name} {split}", on_bad_input,
                             f"repair or delete that {kind} (each needs the text fields {spec.document!r} and "
                             f"{spec.summary!r})")
    rows = []
    for number, record, problem in records:
        if problem is None:
            missing = [f for f in (spec.document, spec.summary) if not isinstance(record.get(f), str)]
            if missing:
                problem = f"has no text field {missing[0]!r}" if record.get(missing[0]) is None else \
                    f"field {missing[0]!r} is not text"
        if problem is not None:
            bad.add(number, problem)
            continue
        rows.append({"document": record[spec.document], "summary": record[spec.summary]})
    bad.report(len(records))
    if not rows:
        raise ConfigError(f"{path} (rows {spec.rows}) holds no examples ({len(bad)} damaged rows skipped).")
    return tuple(rows)


def _local_source(data_dir: str, task: SummarizationTask, on_bad_input: str = "skip") -> seqio.DataSource:
    splits = [s for s in task.local if files.isfile(files.join(data_dir, task.local_dir, task.local[s].file))]
    counts = {s: len(read_split(data_dir, task, s, on_bad_input)) for s in splits}

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        rows = read_split(data_dir, task, split, on_bad_input)
        return tf.data.Dataset.from_tensor_slices(
            {"document": [r["document"] for r in rows], "summary": [r["summary"] for r in rows],
             "idx": np.arange(len(rows), dtype=np.int64)})

    return seqio.FunctionDataSource(dataset_fn, splits=splits, num_input_examples=counts)


def summarize(x: dict, *, document: str, summary: str, instruction: str = "summarize:") -> dict:
    """T5's format (`instruction` then a space, then the document); with `instruction=""` the document alone,
    as BART's summarizers read it."""
    inputs = tf.strings.join([instruction, x[document]], separator=" ") if instruction else x[document]
    return {"inputs": inputs, "targets": x[summary]}


def postprocess(output, example=None, is_target: bool = False):
    del example, is_target
    return output.decode() if isinstance(output, bytes) else output


def register(spiece_model: str, *, source: str = "local", data_dir: str = "../shared/data",
             tfds_data_dir: str | None = None, extra_ids: int = 100, prefix: str = "summ",
             on_bad_input: str = "skip", instruction: str = "summarize:") -> list[str]:
    """Registers `<prefix>_cnn_dailymail`, `<prefix>_xsum` and `<prefix>_samsum` (local: those whose files
    exist, every record checked now by `read_split` under `on_bad_input`); returns the names registered.
    `instruction` opens every input (T5's `summarize:`; "" for BART, `tasks.summarization_instruction`)."""
    check_downstream_source(source, "tasks.summarization_source")
    features = text_to_text_features(spiece_model, extra_ids)
    names = []
    for task in TASKS.values():
        name = f"{prefix}_{task.name}"
        if source == "local":
            data = _local_source(data_dir, task, on_bad_input)
            if not data.splits:
                continue
            keys = ("document", "summary")
        else:
            data = seqio.TfdsDataSource(tfds_name=task.tfds_name, tfds_data_dir=tfds_data_dir)
            keys = (task.tfds_document, task.tfds_summary)
        names.append(name)
        registry.add_task(
            name, [registry.vocabulary_key(spiece_model, extra_ids), source,
                   files.absolute(data_dir) if source == "local" else tfds_data_dir, name, on_bad_input, instruction],
            source=data,
            preprocessors=[seqio.map_over_dataset(functools.partial(summarize, document=keys[0], summary=keys[1],
                                                                    instruction=instruction)),
                           seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
            output_features=features, postprocess_fn=postprocess, metric_fns=[metrics.rouge])
    return names


def check_split(name: str, split: str, *, source: str = "local", data_dir: str = "../shared/data",
                prefix: str = "summ", on_bad_input: str = "skip") -> None:
    """Raises a `ConfigError` naming the missing file when `split` of task `name` is not on disk."""
    suffix = name[len(prefix) + 1:] if name.startswith(prefix + "_") else None
    if source == "local" and suffix in TASKS:
        read_split(data_dir, TASKS[suffix], split, on_bad_input)


# The questions `inputs.py` asks every Task family (`inputs.TASK_FAMILIES`); None: not one of this family's.
PREFIX = "summ_"


def _task(name: str) -> SummarizationTask | None:
    return TASKS.get(name[len(PREFIX):]) if name.startswith(PREFIX) else None


def scores(name: str, config) -> tuple[list[str], str] | None:
    """(ROUGE's scores, rougeL), or None for another family's Task."""
    return None if _task(name) is None else (list(metrics.ROUGE_TYPES), "rougeL")


def train_files(name: str, config) -> list[str] | None:
    """The local file of the `train` split ([] from TFDS), or None for another family's Task."""
    task, t = _task(name), config.tasks
    if task is None:
        return None
    if t.summarization_source != "local" or "train" not in task.local:
        return []
    return [files.join(t.summarization_dir, task.local_dir, task.local["train"].file)]
