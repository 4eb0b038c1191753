"""seqio Tasks for T5 span-corruption pretraining and distillation.

Sources:
- local text files: plain text (one paragraph per line), jsonl with a text field, WikiExtractor
  `<doc>` files (as in ../shared/data/enwiki_2015_extract), each optionally gzip-compressed;
- C4 through TFDS (`c4/en`), for pod runs where the TFDS data is prepared.

Every reader is a native tf.data pipeline (TextLineDataset), so a training iterator can be checkpointed
and resumed exactly. Files are sharded across hosts by seqio's `FileDataSource`. The format is decided
per file (`file_formats`), so one glob may mix formats; the pre-flight scan (`scan_files`) and the reader
(`make_reader`) apply the same per-file rule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from typing import Mapping, Sequence

from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax import files as storage
from miniend_jax.checkpoints import bpe
from miniend_jax.errors import CheckpointError, ConfigError
from tasks import registry, task_files
from tasks.lengths import task_feature_lengths  # noqa: F401 - part of this module's interface
from tasks.span_corruption import span_corruption

FORMATS = ("auto", "text", "jsonl", "wikiextractor")
_FORMAT_CODES = {"text": 0, "jsonl": 1, "wikiextractor": 2}
_DOC_TAG = r"\s*</?doc( [^>]*)?>\s*"
_ASCII_WHITESPACE = " \t\n\r\f\v"


def resolve_files(patterns: str | Sequence[str]) -> list[str]:
    """Sorted files matching one or more glob patterns (comma-separated in a string)."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    files = sorted({f for p in patterns for f in storage.glob(p.strip())})
    if not files:
        raise ConfigError(f"data.files={','.join(patterns)!r} matches no file; point it at a corpus "
                          "(e.g. ../shared/data/enwiki_2015_extract/AA/wiki_*.gz).")
    return files


def detect_format(path: str) -> str:
    """`jsonl` by extension, `wikiextractor` if the file opens with `<doc`, else `text`."""
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    with open_binary(path) as f:
        head = f.read(64).decode("utf-8", errors="replace")
    return "wikiextractor" if head.lstrip().startswith("<doc") else "text"


@contextlib.contextmanager
def open_binary(path: str):
    """The bytes of a corpus file, local or cloud (`miniend_jax.files`), gunzipped where it ends in `.gz`."""
    import gzip
    with storage.open_file(path, "rb") as raw:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw) as f:
                yield f
        else:
            yield raw


def file_lines(path: str) -> list[bytes]:
    """The lines of a corpus file as TextLineDataset reads them (without "\n" or "\r\n")."""
    with open_binary(path) as f:
        data = f.read()
    lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def file_formats(files: Sequence[str], file_format: str = "auto") -> dict[str, str]:
    """The format of each file: `file_format` for all, or with `auto` each file's own (`detect_format`).

    Raises:
      ConfigError: `file_format` is not one of `FORMATS`.
    """
    if file_format not in FORMATS:
        raise ConfigError(f"data.format={file_format!r}: choose one of {', '.join(FORMATS)}.")
    return {path: detect_format(path) if file_format == "auto" else file_format for path in files}



def json_text(line: str, text_field: str) -> str | None:
    """The string under `text_field` of one jsonl record, or None when the line is not a JSON object or
    the field is missing or not a string (such lines are skipped and counted by `scan_files`)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    value = record.get(text_field) if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def _parse_json_text(line: tf.Tensor, text_field: str) -> tf.Tensor:
    """A scalar string tensor: the record's text, or "" (dropped later) when `json_text` gives None."""
    def parse(raw):
        return json_text(raw.numpy().decode("utf-8", errors="replace"), text_field) or ""
    # py_function loses the static shape, which seqio's tokenizer needs: the result is one string.
    return tf.ensure_shape(tf.py_function(parse, [line], tf.string), [])


BAD_INPUT_POLICIES = task_files.POLICIES


@dataclasses.dataclass
class ScanReport:
    """What a pre-flight read of a local corpus found."""

    files: list[str]
    formats: dict[str, str] = dataclasses.field(default_factory=dict)      # path -> format, readable files
    unreadable: dict[str, str] = dataclasses.field(default_factory=dict)   # path -> reason
    invalid_utf8_lines: int = 0
    empty_lines: int = 0
    overlong_lines: int = 0
    bad_json_lines: int = 0     # jsonl lines that are not an object with a string text field
    lines: int = 0
    first_bad: str = ""         # "<file>: line 12 is not valid UTF-8", the first line or file skipped

    def summary(self) -> str:
        kinds = sorted(set(self.formats.values()))
        counts = ", ".join(f"{sum(f == k for f in self.formats.values())} {k}" for k in kinds)
        parts = [f"{self.lines} lines in {len(self.files)} file(s) ({counts})"]
        if self.unreadable:
            parts.append(f"skipped {len(self.unreadable)} unreadable file(s): "
                         + ", ".join(f"{os.path.basename(p)} ({r})" for p, r in self.unreadable.items()))
        parts.append(f"skipped {self.invalid_utf8_lines} line(s) of invalid UTF-8, {self.overlong_lines} overlong "
                     f"line(s), {self.empty_lines} empty line(s)")
        if "jsonl" in kinds:
            parts.append(f"skipped {self.bad_json_lines} jsonl line(s) without a string text field")
        if self.first_bad:
            parts.append(f"first skipped: {self.first_bad} (data.on_bad_input='error' stops at it)")
        return "; ".join(parts)


def scan_files(files: Sequence[str], *, max_line_chars: int, on_bad_input: str = "skip",
               file_format: str = "auto", text_field: str = "text") -> ScanReport:
    """Reads every file once before training, each in its own format (`file_formats`): a corrupt or
    unreadable file, invalid UTF-8, empty and overlong lines, and jsonl lines that are not a JSON object
    with a string `text_field` are counted and skipped (`skip`), or stop the run naming the file and
    line (`error`). The reader drops exactly these lines.

    Returns:
      The readable files, their formats and the counts.
    Raises:
      ConfigError: a bad file or line under `on_bad_input="error"`, or an unknown policy or format.
    """
    import zlib
    if on_bad_input not in BAD_INPUT_POLICIES:
        raise ConfigError(f"data.on_bad_input={on_bad_input!r}: use 'skip' or 'error'.")
    file_formats([], file_format)  # an unknown format name fails before any file is read
    report = ScanReport(files=[])

    def bad(path, what):
        if on_bad_input == "error":
            raise ConfigError(f"{path}: {what}; fix or remove the file, or set data.on_bad_input='skip'.")
        report.first_bad = report.first_bad or f"{path}: {what}"

    for path in files:
        try:
            fmt = file_formats([path], file_format)[path]
            with open_binary(path) as f:
                for number, raw in enumerate(f, 1):
                    report.lines += 1
                    # As TextLineDataset reads it: without "\n" or "\r\n".
                    raw = raw[:-1] if raw.endswith(b"\n") else raw
                    raw = raw[:-1] if raw.endswith(b"\r") else raw
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        bad(path, f"line {number} is not valid UTF-8")
                        report.invalid_utf8_lines += 1
                        continue
                    if len(text) > max_line_chars:
                        bad(path, f"line {number} has {len(text)} characters (data.max_line_chars={max_line_chars})")
                        report.overlong_lines += 1
                        continue
                    if fmt == "jsonl":
                        text = json_text(text, text_field)
                        if text is None:
                            bad(path, f"line {number} is not a JSON object with a string field {text_field!r} "
                                      "(set data.text_field to the field that holds the text)")
                            report.bad_json_lines += 1
                            continue
                    if not text.strip(_ASCII_WHITESPACE):  # tf.strings.strip's whitespace
                        report.empty_lines += 1
        except (OSError, EOFError, zlib.error) as error:
            bad(path, f"unreadable ({type(error).__name__}: {error})")
            report.unreadable[path] = type(error).__name__
            continue
        report.files.append(path)
        report.formats[path] = fmt
    return report


def make_reader(formats: str | Mapping[str, str], text_field: str = "text", max_line_chars: int = 1_000_000,
                cloud: bool = False):
    """`read_file_fn(path) -> tf.data.Dataset` of {"text": scalar tf.string}, one paragraph (or jsonl
    record) each.

    Local files are streamed by `tf.data.TextLineDataset`. With `cloud` (files on object storage) each
    file is read whole through `miniend_jax.files` (`file_lines`, one file per interleave slot in memory)
    and sliced: TensorFlow's own GCS client cannot be pointed at another endpoint, and this reader keeps
    one storage layer for the whole run. The position stays checkpointable: a restored iterator reads
    the file again and continues at the saved line.

    `formats`: one format for every file, or a mapping path -> format (from `file_formats`) for a corpus
    that mixes them; a path the mapping lacks is read as plain text. Lines that are not valid UTF-8 or
    longer than `max_line_chars` characters (without the newline), jsonl lines without a string `text_field`, WikiExtractor's
    `<doc>` tags and empty lines are dropped (`scan_files` counts the same lines).
    """
    if isinstance(formats, str):
        if formats not in _FORMAT_CODES:
            raise ConfigError(f"data.format={formats!r}: a reader needs one of {', '.join(_FORMAT_CODES)}.")
        code_of = lambda path: tf.constant(_FORMAT_CODES[formats])
    else:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(formats), tf.string),
                                                tf.constant([_FORMAT_CODES[f] for f in formats.values()], tf.int32)),
            default_value=_FORMAT_CODES["text"])
        code_of = table.lookup

    def valid(line):
        clean = tf.strings.unicode_transcode(line, "UTF-8", "UTF-8", errors="replace")
        return tf.logical_and(tf.equal(clean, line), tf.strings.length(clean, unit="UTF8_CHAR") <= max_line_chars)

    def read(path):
        code = code_of(path)
        is_jsonl, is_wiki = tf.equal(code, _FORMAT_CODES["jsonl"]), tf.equal(code, _FORMAT_CODES["wikiextractor"])
        if cloud:
            import numpy as np
            whole = tf.py_function(lambda p: np.array(file_lines(p.numpy().decode("utf-8")), dtype=object),
                                   [path], tf.string)
            lines = tf.data.Dataset.from_tensor_slices(tf.ensure_shape(whole, [None])).filter(valid)
        else:
            compression = tf.where(tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", "")
            lines = tf.data.TextLineDataset(path, compression_type=compression).filter(valid)
        lines = lines.filter(lambda l: tf.logical_not(tf.logical_and(is_wiki, tf.strings.regex_full_match(l, _DOC_TAG))))
        lines = lines.map(lambda l: tf.cond(is_jsonl, lambda: _parse_json_text(l, text_field), lambda: l))
        lines = lines.map(tf.strings.strip).filter(lambda l: tf.strings.length(l) > 0)
        return lines.map(lambda l: {"text": l})
    return read


def split_files(files: Sequence[str], validation_files: int) -> dict[str, list[str]]:
    """The last `validation_files` files (sorted order) are held out as the validation split."""
    if validation_files < 0 or validation_files >= len(files):
        raise ConfigError(f"data.validation_files={validation_files} must be in [0, {len(files) - 1}] for "
                          f"{len(files)} matched file(s): at least one file must remain for training.")
    train = list(files[: len(files) - validation_files])
    return {"train": train, "validation": list(files[len(train):]) or train[-1:]}


DOWNSTREAM_SOURCES = ("local", "tfds")  # where GLUE and summarization read from


def vocabulary(spiece_model: str, extra_ids: int = 100) -> seqio.Vocabulary:
    """The SentencePiece vocabulary of `spiece_model` with `extra_ids` sentinels (T5: 100), or for a
    byte-level BPE tokenizer path (`bpe.is_bpe`: BART's tokenizer.json, or a directory holding it or
    vocab.json and merges.txt) a `bpe.ByteLevelBPEVocabulary` (`extra_ids` ignored).

    Raises:
      ConfigError: the file does not exist, or a BPE tokenizer does not load.
    """
    if bpe.is_bpe(spiece_model):
        try:
            return bpe.ByteLevelBPEVocabulary(spiece_model)
        except CheckpointError as error:
            raise ConfigError(f"data.vocab={spiece_model!r}: {error}") from None
    if not storage.isfile(spiece_model):
        raise ConfigError(f"data.vocab={spiece_model!r} {bpe.not_found(spiece_model)}; point it at a SentencePiece "
                          "model (e.g. ../shared/data/t5_spiece/spiece.model) or a byte-level BPE tokenizer "
                          f"(BART's: {bpe.FORMS}).")
    # seqio reads it with tf.io.gfile: a cloud file is given as its local copy.
    return seqio.SentencePieceVocabulary(storage.local_copy(spiece_model), extra_ids=extra_ids)


def text_to_text_features(spiece_model: str, extra_ids: int = 100) -> dict[str, seqio.Feature]:
    """The `inputs` and `targets` features of a text-to-text Task: both tokenized with the vocabulary,
    both ending in EOS."""
    vocab = vocabulary(spiece_model, extra_ids)
    return {"inputs": seqio.Feature(vocab, add_eos=True), "targets": seqio.Feature(vocab, add_eos=True)}


def check_downstream_source(source: str, field: str) -> None:
    """Raises `ConfigError` naming `field` unless `source` is one of `DOWNSTREAM_SOURCES`."""
    if source not in DOWNSTREAM_SOURCES:
        raise ConfigError(f"{field}={source!r}: use {' or '.join(repr(s) for s in DOWNSTREAM_SOURCES)}.")


def _output_features(vocab) -> dict[str, seqio.Feature]:
    return {"inputs": seqio.Feature(vocab, add_eos=True, required=False),
            "targets": seqio.Feature(vocab, add_eos=True)}


def _preprocessors(noise_density: float, mean_noise_span_length: float):
    return [
        functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
        seqio.preprocessors.tokenize,
        functools.partial(span_corruption, noise_density=noise_density,
                          mean_noise_span_length=mean_noise_span_length),
        seqio.preprocessors.append_eos_after_trim,
    ]


class _FileList(seqio.FileDataSource):
    """seqio's `FileDataSource` over files already listed (`resolve_files`): its own listing would hand a
    name with glob characters (`*?[`) to `tf.io.gfile.glob`, TensorFlow's storage client."""

    def list_shards(self, split: str) -> list[str]:
        return list(self._split_to_filepattern[split])


def register_local_span_corruption(files: str | Sequence[str], spiece_model: str, *, file_format: str = "auto",
                                   text_field: str = "text", validation_files: int = 0,
                                   noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                                   extra_ids: int = 100, name: str | None = None,
                                   max_line_chars: int = 1_000_000) -> str:
    """Registers (once) a span-corruption Task over local files and returns its name.

    `files`: glob pattern(s), or the list of files a `scan_files` report kept. With `file_format="auto"`
    each file is read in its own format (`file_formats`), the held-out files included.

    Raises:
      ConfigError: no file, an unknown format, or too many validation files.
    """
    paths = resolve_files(files) if isinstance(files, str) else sorted(files)
    if not paths:
        raise ConfigError("no readable corpus file remains; fix data.files.")
    formats = file_formats(paths, file_format)
    splits = split_files(paths, validation_files)
    key = json.dumps([paths, spiece_model, formats, text_field, validation_files, noise_density,
                      mean_noise_span_length, extra_ids, max_line_chars])
    name = name or "span_corruption_" + hashlib.sha1(key.encode()).hexdigest()[:12]
    registry.add_task(
        name, [key, registry.vocabulary_key(spiece_model, extra_ids)],
        source=_FileList(make_reader(formats, text_field, max_line_chars, cloud=any(storage.is_cloud(p) for p in paths)),
                         split_to_filepattern=splits),
        preprocessors=_preprocessors(noise_density, mean_noise_span_length),
        output_features=_output_features(vocabulary(spiece_model, extra_ids)),
        metric_fns=[])
    return name


def register_c4_span_corruption(spiece_model: str, *, tfds_name: str = "c4/en:3.1.0", data_dir: str | None = None,
                                noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                                extra_ids: int = 100, name: str = "c4_span_corruption") -> str:
    """Registers T5's C4 span-corruption Task from TFDS (needs the prepared TFDS data at run time)."""
    registry.add_task(
        name, [tfds_name, data_dir, noise_density, mean_noise_span_length,
               registry.vocabulary_key(spiece_model, extra_ids)],
        source=seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir),
        preprocessors=_preprocessors(noise_density, mean_noise_span_length),
        output_features=_output_features(vocabulary(spiece_model, extra_ids)),
        metric_fns=[])
    return name


def get_dataset(task_name: str, feature_lengths: Mapping[str, int], *, split: str, batch_size: int,
                pack: bool, shuffle: bool, seed: int | None, num_epochs: int | None = None,
                shard_index: int = 0, num_shards: int = 1, shuffle_buffer_size: int = 10_000) -> tf.data.Dataset:
    """Batches of model features from a Task, through seqio's encoder-decoder feature converter.

    `batch_size` is per host; with `num_shards > 1` each host reads its own files.
    """
    task = seqio.get_mixture_or_task(task_name)
    shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None
    # A Mixture shuffles each of its Tasks with seqio's default buffer; it takes no buffer size.
    buffer = {} if isinstance(task, seqio.Mixture) else {
        "shuffle_buffer_size": shuffle_buffer_size if shuffle else None}
    ds = task.get_dataset(sequence_length=dict(feature_lengths), split=split, shuffle=shuffle, seed=seed,
                          num_epochs=num_epochs, shard_info=shard_info, use_cached=False, **buffer)
    converter = seqio.EncDecFeatureConverter(pack=pack)
    ds = converter(ds, dict(feature_lengths))
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    # The jsonl reader maps through a (stateless) py_function; allow checkpointing the iterator anyway.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    options.deterministic = True
    return ds.with_options(options).prefetch(2)
