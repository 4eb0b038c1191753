"""Pretraining text from a Hugging Face `datasets` dataset (`data.source = "hf"`).

`data.hf_path` is a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or file
patterns (comma-separated globs) of `.parquet`, `.jsonl`/`.json`, `.csv` or `.arrow` files, read through `datasets`
(files are streamed, so a corpus larger than memory passes through in bounded memory). The text column
`data.text_field` of split `data.hf_split` is written once, before training, as `data.hf_shards` jsonl
files (`{"text": ...}` per document, documents dealt round-robin) under `<workdir>/hf_text/`, and the run
reads those like any local corpus: per-host sharding by file, the last `data.validation_files` files held
out, and the tf.data input position checkpointed with the model, so a resumed run continues at the exact
example. A resumed run reuses the export when the source is unchanged and refuses a changed one.

Bad input stops before training with a `ConfigError` naming the problem and the fix: no dataset at the
path, a split or column that does not exist (the existing ones are listed), a column that is not text, an
empty split, a file `datasets` cannot read. A row with no text (null) in the column is named and skipped
and counted, or stops the run, by `data.on_bad_input`.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from miniend_jax import files as storage
from miniend_jax.errors import ConfigError

# File suffix -> the `datasets` builder that reads it.
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow", ".csv": "csv"}
EXPORT_DIR = "hf_text"


def matching_files(path: str) -> list[str]:
    patterns = [p.strip() for p in path.split(",") if p.strip()]
    return sorted({f for p in patterns for f in storage.glob(p)})


def is_saved_dataset(path: str) -> bool:
    return storage.isdir(path) and any(storage.exists(storage.join(path, name))
                                       for name in ("dataset_dict.json", "state.json", "dataset_info.json"))


def source_key(path: str, split: str, text_field: str) -> dict:
    """What identifies the export's source: the dataset's files (path, size, modification time), the
    split and the column."""
    files = ([storage.join(path, f) for f in storage.walk_files(path)] if storage.isdir(path)
             else matching_files(path))
    stats = [[f, *storage.version(f).values()] for f in files]
    return {"path": storage.absolute(path) if storage.isdir(path) else path, "split": split,
            "text_field": text_field, "files": stats}


def open_split(path: str, split: str, *, field: str = "data.hf_path", split_field: str = "data.hf_split"):
    """The split as a `datasets.Dataset` (saved to disk: memory-mapped) or `IterableDataset` (files:
    streamed). `field` and `split_field` name the settings in errors.

    Raises:
      ConfigError: nothing readable at `path`, an unknown suffix, or no split `split`.
    """
    import datasets
    if is_saved_dataset(path):
        try:
            loaded = datasets.load_from_disk(path)
        except Exception as error:  # datasets raises many kinds (e.g. IndexError on a dataset of no shards)
            raise ConfigError(f"{field}={path!r}: `datasets.load_from_disk` cannot read it "
                              f"({type(error).__name__}: {error}); write it again with save_to_disk, with at "
                              "least one document.") from error
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ConfigError(f"{split_field}={split!r}: the dataset at {path} has the splits "
                                  f"{', '.join(loaded)}; set {split_field} to one of them.")
            return loaded[split]
        return loaded
    files = matching_files(path)
    if not files:
        raise ConfigError(f"{field}={path!r} is neither a save_to_disk directory nor matches any file; "
                          "point it at a directory written by save_to_disk, or at .parquet/.jsonl/.csv/.arrow files.")
    suffixes = {os.path.splitext(f)[1] for f in files}
    builders = {BUILDERS.get(s) for s in suffixes}
    if None in builders or len(builders) != 1:
        raise ConfigError(f"{field}={path!r} matches files of the kinds {', '.join(sorted(suffixes))}; use "
                          f"files of one kind among {', '.join(BUILDERS)}.")
    if all(storage.getsize(f) == 0 for f in files) or _parquet_rows(files) == 0:
        raise ConfigError(f"split {split!r} of the dataset at {path} is empty (its files hold no rows); point "
                          f"{field} at files with rows.")
    try:
        return datasets.load_dataset(builders.pop(), data_files={split: files}, split=split, streaming=True)
    except Exception as error:  # datasets and pyarrow raise their own kinds on unreadable files
        raise ConfigError(f"{field}={path!r}: `datasets` cannot read split {split!r} ({type(error).__name__}: "
                          f"{error}); check the files (an empty or damaged file?).") from error


def _parquet_rows(files: list[str]) -> int | None:
    """Rows in parquet files (from their footers), None for other files or unreadable footers. `datasets`
    fails on a parquet file of no rows (ArrowInvalid "BatchSize must be greater than 0"), so an empty split
    is told apart here."""
    if not all(f.endswith(".parquet") for f in files):
        return None
    import pyarrow.parquet as pq
    try:
        total = 0
        for f in files:  # opened through the file layer (pyarrow's own GCS client is not this run's)
            with storage.open_file(f, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        return total
    except Exception:  # a damaged file: `datasets` names it when it reads it
        return None


def check_column(dataset, path: str, split: str, text_field: str) -> None:
    """The split has a text column `text_field` and at least one row.

    Raises:
      ConfigError: naming the column (and the columns there are) or the empty split, and the fix.
    """
    import datasets
    features = dataset.features
    columns = list(features) if features is not None else None
    try:
        first = next(iter(dataset), None)
    except Exception as error:  # pyarrow and datasets raise their own kinds on unreadable files
        raise ConfigError(f"data.hf_path={path!r}: `datasets` cannot read split {split!r} ({type(error).__name__}: "
                          f"{error}); check the files (an empty or damaged file?).") from error
    if columns is None and first is not None:
        columns = list(first)
    if first is None:
        raise ConfigError(f"split {split!r} of the dataset at {path} is empty; point data.hf_path/data.hf_split "
                          "at a split with documents.")
    if text_field not in columns:
        raise ConfigError(f"data.text_field={text_field!r}: the dataset at {path} has no column {text_field!r} "
                          f"(its columns: {', '.join(columns)}); set data.text_field to the text column.")
    feature = features.get(text_field) if features is not None else None
    is_text = (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
               if feature is not None else isinstance(first[text_field], str))
    if not is_text:
        kind = feature.dtype if isinstance(feature, datasets.Value) else type(feature or first[text_field]).__name__
        raise ConfigError(f"data.text_field={text_field!r}: column {text_field!r} of the dataset at {path} holds "
                          f"{kind}, not text; set data.text_field to a string column.")


def export_text(path: str, split: str, text_field: str, out_dir: str, num_shards: int,
                on_bad_input: str = "skip") -> list[str]:
    """Writes the `text_field` column of split `split` as `num_shards` jsonl files in `out_dir` (once: an
    export of the same source is reused); returns the files. Empty documents are left out; a row with no
    value (null) in the column is a damaged row, skipped and counted or an error by `on_bad_input`
    (`tasks/task_files.py`).

    Raises:
      ConfigError: bad input (see `open_split`, `check_column`), a file `datasets` cannot read past a row,
        a row without text under on_bad_input="error", or `out_dir` holds an export of another source (a
        resumed run whose dataset changed).
    """
    from tasks.task_files import BadRows, check_policy
    check_policy(on_bad_input)
    out_dir = storage.absolute(out_dir)  # `~` expanded where local
    key = source_key(path, split, text_field)
    key["num_shards"] = num_shards
    files = [storage.join(out_dir, f"part-{i:05d}-of-{num_shards:05d}.jsonl") for i in range(num_shards)]
    done = storage.join(out_dir, "source.json")
    if storage.exists(done):
        saved = json.loads(storage.read_text(done))
        if saved == key and all(storage.exists(f) for f in files):
            return files
        check_column(open_split(path, split), path, split, text_field)  # a bad new source is named first
        raise ConfigError(f"{out_dir} holds the text of another dataset, split, column or shard count than "
                          f"data.hf_path={path!r} (data.hf_split={split!r}, data.text_field={text_field!r}, "
                          f"data.hf_shards={num_shards}); the checkpointed input position refers to it: restore "
                          "those settings, or use a new --workdir.")
    if storage.is_cloud(out_dir):  # written locally, then uploaded with source.json (the marker) last
        import tempfile
        with tempfile.TemporaryDirectory(prefix="miniend_hf_text.") as tmp:
            export_text(path, split, text_field, tmp, num_shards, on_bad_input)
            storage.copy_tree(tmp, out_dir, last="source.json")
        return files
    dataset = open_split(path, split)
    check_column(dataset, path, split, text_field)
    os.makedirs(out_dir, exist_ok=True)
    handles = [open(f + ".tmp", "w", encoding="utf-8") for f in files]
    written = read = 0
    bad = BadRows(path, f"data.hf_path split {split!r}", on_bad_input,
                  f"give every row text in column {text_field!r}, or delete the row")
    try:
        rows = iter(dataset.select_columns([text_field]) if hasattr(dataset, "select_columns") else dataset)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except Exception as error:  # pyarrow and datasets raise their own kinds on damaged files
                raise ConfigError(f"data.hf_path={path!r}: `datasets` cannot read split {split!r} past row {read} "
                                  f"({type(error).__name__}: {error}); repair or remove the damaged file.") from error
            read += 1
            text = row[text_field]
            if not isinstance(text, str):
                bad.add(f"row {read} of split {split!r} of {path}", f"has no text in column {text_field!r}"
                        if text is None else f"holds {type(text).__name__}, not text, in column {text_field!r}")
            elif text.strip():
                handles[written % num_shards].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                written += 1
    except BaseException:
        for handle in handles:
            handle.close()
        for f in files:
            os.remove(f + ".tmp")
        raise
    for handle in handles:
        handle.close()
    bad.report(read)
    if written < num_shards:
        for f in files:
            os.remove(f + ".tmp")
        raise ConfigError(f"split {split!r} of the dataset at {path} has {written} non-empty document(s) in "
                          f"{text_field!r}, fewer than data.hf_shards={num_shards}; lower data.hf_shards or "
                          "give more text.")
    for f in files:
        os.replace(f + ".tmp", f)
    with open(done + ".tmp", "w") as f:
        json.dump(key, f)
    os.replace(done + ".tmp", done)
    return files


def export_dir(workdir: str) -> str:
    return storage.join(workdir, EXPORT_DIR)


def exported_files(workdir: str, num_shards: int) -> Sequence[str]:
    """The export's files (written by process 0; other processes wait for `source.json`)."""
    return [storage.join(export_dir(workdir), f"part-{i:05d}-of-{num_shards:05d}.jsonl") for i in range(num_shards)]
