"""BART's byte-level BPE tokenizer as a seqio vocabulary, and the training of such a tokenizer.

Ids. HF's BART vocabulary (transformers `tokenization_bart.py`, the same byte-level BPE as RoBERTa's) has
`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, ..., `<mask>`=last (50264 in bart-base). This project's pipeline and
models read id 0 as padding (seqio's `PAD_ID`; masks are `tokens > 0`), so the *pipeline ids* used here are
HF's ids with the pad id and 0 swapped: pipeline 0 = `<pad>`, pipeline 1 = `<s>`, every other id unchanged
(`</s>` = 2, `<unk>` = 3, `<mask>` = `vocab_size - 1`). The swap is its own inverse (`hf_to_pipeline` and
`pipeline_to_hf` are the same function) and the identity where the pad id is already 0. Model weights
imported from HF swap their embedding rows the same way.

Accepted tokenizer paths (local or cloud, `is_bpe`):
- a `tokenizer.json` file (the `tokenizers` format, what transformers 5 writes), used as it is;
- a directory holding `tokenizer.json` (preferred when both forms are there, as transformers does);
- a directory holding `vocab.json` and `merges.txt` (what transformers 4 writes for BART): the pipeline is
  built as BART's (byte-level pre-tokenizer without a prefix space, byte-level decoder, `<mask>` absorbing
  the space before it), as `RobertaTokenizer` builds it.

`ByteLevelBPEVocabulary` subclasses `seqio.Vocabulary`, and importing seqio imports TensorFlow; the class
is therefore defined on first use (`from miniend_jax.checkpoints.bpe import ByteLevelBPEVocabulary`), so
that the id swap, `vocab_size` and `train_bpe` import neither.

Command line: `python -m miniend_jax.checkpoints.bpe --corpus 'glob' --vocab_size 2000 --out DIR` trains a
tokenizer (`train_bpe`) on the text lines of the matched files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from typing import Iterable

from miniend_jax import files
from miniend_jax.errors import CheckpointError, ConfigError

TOKENIZER_JSON = "tokenizer.json"
VOCAB_JSON = "vocab.json"
MERGES_TXT = "merges.txt"
BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS = (BOS, PAD, EOS, UNK)  # HF ids 0..3 in BART; <mask> is the last id
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + 1  # every byte, the four special tokens and <mask>
FORMS = "a tokenizer.json file, or a directory holding tokenizer.json or vocab.json and merges.txt"


# --- ids --------------------------------------------------------------------------------------------------

def hf_to_pipeline(ids, pad_id: int):
    """HF ids to pipeline ids: `pad_id` and 0 swapped, every other id unchanged (see the module docstring).

    Args:
      ids: an int, a (nested) list or tuple of ints, or an integer array of any shape (numpy, or any array
        type with `==`, `+`, `*` and `astype`, such as `jax.numpy`).
      pad_id: the HF id of `<pad>` (1 in BART); 0 makes the swap the identity.

    Returns:
      the same kind and shape (a list for a list or tuple, an array of `ids`' dtype for an array).

    To move rows of a HF embedding table `[vocab, d]` to pipeline order:
    `table[pipeline_to_hf(np.arange(vocab), pad_id)]` (row p of the result is the HF row of pipeline id p).
    """
    if isinstance(ids, (list, tuple)):
        return [hf_to_pipeline(i, pad_id) for i in ids]
    if hasattr(ids, "astype") and getattr(ids, "ndim", 0) > 0:
        zero = (ids == 0).astype(ids.dtype)
        pad = (ids == pad_id).astype(ids.dtype)
        return ids + (zero - pad) * pad_id
    value = int(ids)
    return pad_id if value == 0 else 0 if value == pad_id else value


def pipeline_to_hf(ids, pad_id: int):
    """Pipeline ids to HF ids: the same swap as `hf_to_pipeline` (an involution); same arguments."""
    return hf_to_pipeline(ids, pad_id)


# --- paths ------------------------------------------------------------------------------------------------

def tokenizer_files(path: str) -> dict[str, str] | None:
    """The files that make the tokenizer at `path`: `{"tokenizer.json": ...}` or `{"vocab.json": ...,
    "merges.txt": ...}` (paths of `path`'s kind, local or cloud); None where `path` is none of the
    accepted forms (`FORMS`)."""
    if not path:
        return None
    if files.isfile(path):
        return {TOKENIZER_JSON: path} if path.endswith(".json") else None
    if not files.isdir(path):
        return None
    names = set(files.listdir(path))
    if TOKENIZER_JSON in names:
        return {TOKENIZER_JSON: files.join(path, TOKENIZER_JSON)}
    if {VOCAB_JSON, MERGES_TXT} <= names:
        return {VOCAB_JSON: files.join(path, VOCAB_JSON), MERGES_TXT: files.join(path, MERGES_TXT)}
    return None


def is_bpe(path: str) -> bool:
    """Whether `path` names a byte-level BPE tokenizer: a `.json` file, or a directory holding
    `tokenizer.json`, or `vocab.json` and `merges.txt`. Only the names are looked at (a SentencePiece
    `spiece.model` file is not one)."""
    return tokenizer_files(path) is not None


def not_found(path: str) -> str:
    """Why `path` is no tokenizer, as the end of a sentence naming it: "does not exist" or "is a directory
    holding neither tokenizer.json nor vocab.json and merges.txt"."""
    if path and files.isdir(path):
        return "is a directory holding neither tokenizer.json nor vocab.json and merges.txt"
    return "does not exist"


def file_versions(path: str) -> dict[str, dict]:
    """`{name: files.version(...)}` (size and modification time or generation) of each tokenizer file
    (`tokenizer.json`, `vocab.json`, `merges.txt`) in directory `path`, or of file `path` itself; what
    changes when the tokenizer is rewritten in place."""
    if not files.isdir(path):
        return {os.path.basename(path.rstrip("/")): files.version(path)} if files.isfile(path) else {}
    names = set(files.listdir(path))
    return {n: files.version(files.join(path, n)) for n in (TOKENIZER_JSON, VOCAB_JSON, MERGES_TXT) if n in names}


# --- loading ----------------------------------------------------------------------------------------------

def _add_bart_specials(tokenizer) -> None:
    """Marks BART's special tokens as special (added tokens) in `tokenizer`, appending those its
    vocabulary lacks, as `RobertaTokenizer` does; `<mask>` absorbs the space before it (`lstrip`), as in
    transformers' BART and RoBERTa tokenizers."""
    from tokenizers import AddedToken
    tokenizer.add_special_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=True)
                                  for t in SPECIAL_TOKENS]
                                 + [AddedToken(MASK, lstrip=True, rstrip=False, normalized=False, special=True)])


def _bart_pipeline(tokenizer) -> None:
    """BART's pipeline around a byte-level BPE model (transformers `RobertaTokenizer`): no normalizer, a
    byte-level pre-tokenizer without a prefix space, a byte-level decoder and `<s> ... </s>` added by a
    `RobertaProcessing` post-processor."""
    from tokenizers import decoders, pre_tokenizers, processors
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(
        (EOS, tokenizer.token_to_id(EOS)), (BOS, tokenizer.token_to_id(BOS)), trim_offsets=True,
        add_prefix_space=False)


def load_tokenizer(path: str):
    """(`tokenizers.Tokenizer` with HF ids, digest) of the tokenizer at `path` (see the module docstring).
    The digest is a SHA-256 of the files' names and bytes.

    Raises:
      CheckpointError: `path` is none of the accepted forms, does not parse, is not a BPE model, or lacks
        `<s>`, `<pad>` or `</s>`.
    """
    from tokenizers import Tokenizer, models
    sources = tokenizer_files(path)
    if sources is None:
        raise CheckpointError(f"BPE tokenizer {path!r} {not_found(path)}; pass {FORMS}.")
    local = {name: files.local_copy(source) for name, source in sources.items()}
    digest = hashlib.sha256()
    for name in sorted(local):
        with open(local[name], "rb") as f:
            digest.update(name.encode() + b"\0" + f.read() + b"\0")
    try:
        if TOKENIZER_JSON in local:
            tokenizer = Tokenizer.from_file(local[TOKENIZER_JSON])
        else:
            tokenizer = Tokenizer(models.BPE.from_file(local[VOCAB_JSON], local[MERGES_TXT], dropout=None,
                                                       continuing_subword_prefix="", end_of_word_suffix="",
                                                       fuse_unk=False))
            _add_bart_specials(tokenizer)
            _bart_pipeline(tokenizer)
    except Exception as error:  # tokenizers raises plain Exception for unreadable files
        raise CheckpointError(f"BPE tokenizer {path!r} does not load ({str(error)[:200]}); pass {FORMS}, "
                              "as transformers writes them for BART.") from None
    if not isinstance(tokenizer.model, models.BPE):
        raise CheckpointError(f"{path!r} holds a {type(tokenizer.model).__name__} tokenizer, not a BPE one; pass "
                              "a byte-level BPE tokenizer (BART's), or a SentencePiece model file for T5.")
    missing = [t for t in (BOS, PAD, EOS) if tokenizer.token_to_id(t) is None]
    if missing:
        raise CheckpointError(f"BPE tokenizer {path!r} has no {', '.join(missing)} token; BART's vocabulary "
                              f"has {', '.join(SPECIAL_TOKENS)} and {MASK}.")
    return tokenizer, digest.hexdigest()


def vocab_size(path: str) -> int:
    """Number of ids of the tokenizer at `path`, added tokens included (HF's `len(tokenizer)`: 50,265 for
    bart-base); without importing TensorFlow.

    Raises:
      CheckpointError: as `load_tokenizer`.
    """
    return load_tokenizer(path)[0].get_vocab_size(with_added_tokens=True)


def hf_tokenizer(path: str):
    """A `transformers.BartTokenizerFast` (transformers 5: `RobertaTokenizer`) over the files at `path`,
    with HF ids: `tokenizer(text)["input_ids"]` is `<s> ... </s>`. A vocab.json + merges.txt directory gets
    `<mask>` absorbing the space before it, as transformers 4's BART tokenizer gives it.

    Raises:
      CheckpointError: `path` is none of the accepted forms.
    """
    import transformers
    from tokenizers import AddedToken
    sources = tokenizer_files(path)
    if sources is None:
        raise CheckpointError(f"BPE tokenizer {path!r} {not_found(path)}; pass {FORMS}.")
    kwargs = {} if TOKENIZER_JSON in sources else {
        "mask_token": AddedToken(MASK, lstrip=True, rstrip=False, normalized=False, special=True)}
    if files.isdir(path) and not files.is_cloud(path):
        return transformers.BartTokenizerFast.from_pretrained(os.path.expanduser(path), **kwargs)
    with tempfile.TemporaryDirectory() as tmp:  # from_pretrained looks for the files by name
        for name, source in sources.items():
            shutil.copy(files.local_copy(source), os.path.join(tmp, name))
        return transformers.BartTokenizerFast.from_pretrained(tmp, **kwargs)


# --- the seqio vocabulary (defined on first use: seqio imports TensorFlow) -------------------------------

def _define_vocabulary():
    import numpy as np
    import seqio
    import tensorflow as tf

    class ByteLevelBPEVocabulary(seqio.Vocabulary):
        """A byte-level BPE tokenizer (BART's) as a `seqio.Vocabulary`, in pipeline ids (module docstring).

        - `encode(text)`: `<s>` and the text's tokens, without `</s>` (a `seqio.Feature(add_eos=True)`
          appends it): the pipeline ids of HF's `tokenizer(text)["input_ids"][:-1]`. Special-token strings in
          the text (`<mask>`, `</s>`) become their ids, as in HF.
        - `decode(ids)`: the text up to the first `</s>`, special tokens (`<s>`, `<pad>`, `<unk>`, `<mask>`)
          dropped: HF's `decode(..., skip_special_tokens=True)` of the ids through the first `</s>` (a
          literal "</s>" in encoded text ends it too). Ids outside the vocabulary read as `<unk>`. Byte-level
          BPE loses nothing: `decode(encode(text)) == text` for text without special-token strings.
        - `encode_tf(text)`: a scalar `tf.string` to a 1-D `tf.int32` tensor; `decode_tf(ids)`: 1-D ids to a
          scalar `tf.string`, `[batch, length]` ids to `[batch]` strings. Both run the Python tokenizer
          (`tf.numpy_function`), so they work in eager code and in `tf.data` maps, not in saved graphs.

        Attributes: `pad_id` 0, `bos_id` 1, `eos_id`, `unk_id`, `mask_id` (pipeline ids; `unk_id` or
        `mask_id` None where the vocabulary lacks the token), `vocab_size` (HF's `len(tokenizer)`), `hf_pad_id`
        (the HF id of `<pad>`: 1 in BART), `path`. Two vocabularies are equal when their files hold the same
        bytes (wherever they are).
        """

        def __init__(self, path: str):
            """Args: path: `FORMS` (local or cloud). Raises: CheckpointError: as `load_tokenizer`."""
            self.path = path
            self._tokenizer, self._digest = load_tokenizer(path)
            self.hf_pad_id = self._tokenizer.token_to_id(PAD)
            self._size = self._tokenizer.get_vocab_size(with_added_tokens=True)
            super().__init__(extra_ids=0)

        def _pipeline_id(self, token: str) -> int | None:
            hf_id = self._tokenizer.token_to_id(token)
            return None if hf_id is None else hf_to_pipeline(hf_id, self.hf_pad_id)

        @property
        def bos_id(self) -> int:
            return self._pipeline_id(BOS)

        @property
        def eos_id(self) -> int:
            return self._pipeline_id(EOS)

        @property
        def unk_id(self) -> int | None:
            return self._pipeline_id(UNK)

        @property
        def mask_id(self) -> int | None:
            return self._pipeline_id(MASK)

        @property
        def _base_vocab_size(self) -> int:
            return self._size

        @property
        def tokenizer(self):
            """The `tokenizers.Tokenizer` (HF ids)."""
            return self._tokenizer

        def _encode(self, s: str) -> list[int]:
            ids = self._tokenizer.encode(s, add_special_tokens=False).ids
            return [self.bos_id] + hf_to_pipeline(ids, self.hf_pad_id)

        def _decode(self, ids) -> str:
            hf_ids = pipeline_to_hf([int(i) for i in ids], self.hf_pad_id)
            return self._tokenizer.decode(hf_ids, skip_special_tokens=True)

        def _encode_tf(self, s):
            s = tf.convert_to_tensor(s, tf.string)
            if s.shape.rank == 1:  # a vector of strings: ragged rows, as seqio's SentencePiece vocabulary gives
                def encode_all(texts):
                    rows = [self._encode(t.decode("utf-8", errors="replace")) for t in texts.tolist()]
                    return (np.asarray([i for row in rows for i in row], np.int32),
                            np.asarray([len(row) for row in rows], np.int64))

                values, lengths = tf.numpy_function(encode_all, [s], (tf.int32, tf.int64), stateful=False)
                values.set_shape([None])
                lengths.set_shape([None])
                return tf.RaggedTensor.from_row_lengths(values, lengths)
            if s.shape.rank not in (0, None):
                raise ValueError(f"encode_tf takes a string or a vector of strings, not a tensor of shape {s.shape}.")

            def encode(text):  # bytes in a graph (tf.data), a 0-d object array holding them in eager mode
                text = text.item() if isinstance(text, np.ndarray) else text
                return np.asarray(self._encode(text.decode("utf-8", errors="replace")), np.int32)

            ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
            ids.set_shape([None])
            return ids

        def _decode_tf(self, ids):
            ids = tf.convert_to_tensor(ids)

            def decode(array):
                rows = array.reshape(int(np.prod(array.shape[:-1])), array.shape[-1]) if array.ndim else \
                    array.reshape(1, 1)
                texts = [self._decode(row).encode("utf-8") for row in rows.tolist()]
                return np.asarray(texts, dtype=object).reshape(array.shape[:-1])

            texts = tf.numpy_function(decode, [ids], tf.string, stateful=False)
            if ids.shape.rank is not None:
                texts.set_shape(ids.shape[:-1])
            return texts

        def __eq__(self, other) -> bool:
            return isinstance(other, ByteLevelBPEVocabulary) and self._digest == other._digest

        def __hash__(self) -> int:
            return hash(self._digest)

        def __str__(self) -> str:
            return f"ByteLevelBPEVocabulary(path={self.path}, vocab_size={self._size}, sha256={self._digest[:16]})"

        __repr__ = __str__

    ByteLevelBPEVocabulary.__module__ = __name__  # pickled by reference as bpe.ByteLevelBPEVocabulary
    ByteLevelBPEVocabulary.__qualname__ = "ByteLevelBPEVocabulary"
    return ByteLevelBPEVocabulary


def __getattr__(name: str):
    if name == "ByteLevelBPEVocabulary":
        cls = _define_vocabulary()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- HF tokenizer files -----------------------------------------------------------------------------------

def _write_hf_configs(directory: str) -> None:
    """`special_tokens_map.json` and `tokenizer_config.json` of a BART tokenizer into local `directory`."""
    names = {BOS: "bos_token", EOS: "eos_token", UNK: "unk_token", PAD: "pad_token"}
    special = {key: token for token, key in names.items()}
    special.update(sep_token=EOS, cls_token=BOS, mask_token={
        "content": MASK, "lstrip": True, "rstrip": False, "normalized": False, "single_word": False})
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2, sort_keys=True)
    config = {**special, "mask_token": MASK, "tokenizer_class": "BartTokenizer", "add_prefix_space": False,
              "errors": "replace", "trim_offsets": True, "clean_up_tokenization_spaces": False}
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def save_hf_tokenizer(path: str, directory: str) -> None:
    """Writes the tokenizer at `path` (any of `FORMS`) into local `directory` as HF loads a BART tokenizer:
    `tokenizer.json`, the source's `vocab.json` + `merges.txt` where it has them, and the two config files.

    Raises:
      CheckpointError: `path` is no byte-level BPE tokenizer.
    """
    sources = tokenizer_files(path)
    if sources is None:
        raise CheckpointError(f"vocabulary {path} {not_found(path)}; a BART export needs {FORMS}.")
    load_tokenizer(path)[0].save(os.path.join(directory, TOKENIZER_JSON))
    for name, source in sources.items():
        if name != TOKENIZER_JSON:
            files.write_bytes(os.path.join(directory, name), files.read_bytes(source))
    _write_hf_configs(directory)


# --- training ---------------------------------------------------------------------------------------------

def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str, *, min_frequency: int = 2) -> str:
    """Trains a byte-level BPE tokenizer configured as BART's and writes it to `out_dir` (local or cloud).

    HF ids: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, the 256 byte symbols, the merged tokens, and `<mask>`
    last. `out_dir` receives `tokenizer.json` (the whole pipeline), `vocab.json` + `merges.txt` (transformers
    4's BART files; `<mask>` included in vocab.json as in bart-base), `tokenizer_config.json` and
    `special_tokens_map.json`, so that `transformers.AutoTokenizer.from_pretrained(out_dir)` loads it as a
    `BartTokenizer` (offline), and `ByteLevelBPEVocabulary(out_dir)` reads it.

    Args:
      texts: training text, one example per string (empty strings are skipped).
      vocab_size: number of ids, specials and `<mask>` included; at least `MIN_VOCAB_SIZE` (261). A small
        corpus may give fewer: merges stop where no pair occurs `min_frequency` times.
      out_dir: the directory to write (created; files of these names are replaced).
      min_frequency: the fewest occurrences of a pair that is merged.

    Returns:
      `out_dir`.

    Raises:
      ConfigError: `vocab_size` is below `MIN_VOCAB_SIZE`, or `texts` holds no text.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(f"vocab_size={vocab_size!r}: a byte-level BPE vocabulary needs at least "
                          f"{MIN_VOCAB_SIZE} ids (256 bytes, {', '.join(SPECIAL_TOKENS)} and {MASK}).")
    count = [0]

    def nonempty():
        for text in texts:
            if text:
                count[0] += 1
                yield text

    base = Tokenizer(models.BPE(dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                                fuse_unk=False))
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    base.train_from_iterator(nonempty(), trainer)
    if not count[0]:
        raise ConfigError("the training text is empty: give a corpus with at least one non-empty line.")
    with tempfile.TemporaryDirectory() as tmp:
        base.model.save(tmp)  # vocab.json and merges.txt
        with open(os.path.join(tmp, VOCAB_JSON), encoding="utf-8") as f:
            vocab = json.load(f)
        vocab[MASK] = len(vocab)
        with open(os.path.join(tmp, VOCAB_JSON), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        tokenizer = Tokenizer(models.BPE.from_file(os.path.join(tmp, VOCAB_JSON), os.path.join(tmp, MERGES_TXT),
                                                   dropout=None, continuing_subword_prefix="",
                                                   end_of_word_suffix="", fuse_unk=False))
        _add_bart_specials(tokenizer)
        _bart_pipeline(tokenizer)
        tokenizer.save(os.path.join(tmp, TOKENIZER_JSON))
        _write_hf_configs(tmp)
        with files.local_dir_for(out_dir) as target:
            for name in sorted(os.listdir(tmp)):
                shutil.copy(os.path.join(tmp, name), os.path.join(target, name))
    return out_dir


# --- command line -----------------------------------------------------------------------------------------

def corpus_lines(pattern: str, text_field: str = "text") -> list[str]:
    """The non-empty text lines of the files matching glob `pattern` (local or cloud; `.gz` read
    decompressed): each line of a `.jsonl` file gives its `text_field` string, each line of another file
    itself (WikiExtractor's `<doc ...>` and `</doc>` lines skipped).

    Raises:
      ConfigError: no file matches `pattern`.
    """
    paths = files.glob(pattern)
    if not paths:
        raise ConfigError(f"--corpus {pattern!r} matches no file; give a glob of .txt or .jsonl files "
                          "(optionally .gz).")
    lines = []
    for path in paths:
        name = path[:-3] if path.endswith(".gz") else path
        with files.open_file(path, "rb") as raw:
            data = gzip.decompress(raw.read()) if path.endswith(".gz") else raw.read()
        for line in io.StringIO(data.decode("utf-8", errors="replace")):
            line = line.rstrip("\n")
            if name.endswith(".jsonl"):
                try:
                    value = json.loads(line).get(text_field) if line.strip() else None
                except (json.JSONDecodeError, AttributeError):
                    value = None
                line = value if isinstance(value, str) else ""
            elif line.startswith("<doc ") or line == "</doc>":
                continue
            if line.strip():
                lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Trains a byte-level BPE tokenizer configured as BART's.")
    parser.add_argument("--corpus", required=True, help="glob of .txt or .jsonl files (optionally .gz)")
    parser.add_argument("--vocab_size", type=int, required=True,
                        help=f"ids, special tokens included (at least {MIN_VOCAB_SIZE})")
    parser.add_argument("--out", required=True, help="directory to write the tokenizer files into")
    parser.add_argument("--text_field", default="text", help="the text field of .jsonl lines")
    parser.add_argument("--max_lines", type=int, default=0, help="train on the first N lines only (0: all)")
    args = parser.parse_args(argv)
    try:
        if args.vocab_size < MIN_VOCAB_SIZE:  # before reading the corpus
            raise ConfigError(f"--vocab_size={args.vocab_size}: a byte-level BPE vocabulary needs at least "
                              f"{MIN_VOCAB_SIZE} ids (256 bytes, {', '.join(SPECIAL_TOKENS)} and {MASK}).")
        lines = corpus_lines(args.corpus, args.text_field)
        if args.max_lines > 0:
            lines = lines[: args.max_lines]
        if not lines:
            raise ConfigError(f"--corpus {args.corpus!r} holds no text (no non-empty line, and no .jsonl line "
                              f"with a {args.text_field!r} string); give files with one example per line.")
        train_bpe(lines, args.vocab_size, args.out)
    except ConfigError as error:
        raise SystemExit(f"[bpe] {error}") from None
    print(f"[bpe] {vocab_size(args.out)} ids trained on {len(lines)} lines of {args.corpus}: {args.out}",
          file=sys.stdout)


if __name__ == "__main__":
    main()
