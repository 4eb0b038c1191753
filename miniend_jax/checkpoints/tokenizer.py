"""The T5 SentencePiece vocabulary with sentinel ids, as seqio and as HF `transformers` see it.

Ids: the SentencePiece pieces (pad 0, eos 1, unk 2, ...) followed by `extra_ids` sentinels counted from
the top: `<extra_id_0>` is the last id, `vocab_size - 1`. Both views give identical ids (tested on plain
text and on decoded span-corrupted examples of the Wikipedia corpus).

transformers 5 ignores `T5Tokenizer(vocab_file=...)` and maps every word to `<unk>`; the HF tokenizer
is therefore always built with `from_pretrained` on a directory holding `spiece.model`. Its pipeline is
then set to SentencePiece's own behaviour (`match_sentencepiece`), which transformers 5's `T5Tokenizer`
does not give even with `legacy=False`: it puts a bare "▁" (id 3) after a sentinel that precedes
punctuation, and before every sentinel that follows a space.

Where the two still differ: HF parses special-token *strings* glued to a preceding word (`word<extra_id_0>`,
`</s>`, `<unk>`) into their ids; seqio and SentencePiece spell them out. Span-corrupted text never has
them: its sentinels follow a space or open the text.

`vocab_size` and `seqio_vocabulary` also take a byte-level BPE tokenizer (BART's; `bpe.is_bpe`), and give
its size and `bpe.ByteLevelBPEVocabulary`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from miniend_jax import files
from miniend_jax.errors import CheckpointError

DEFAULT_EXTRA_IDS = 100
SPIECE_NAME = "spiece.model"


def _check(spiece_model: str) -> str:
    """A local path of `spiece_model` (a cloud file is copied, `files.local_copy`)."""
    if not files.isfile(spiece_model):
        raise CheckpointError(f"SentencePiece model {spiece_model} does not exist; pass the path of a "
                              "T5 spiece.model (for example ../shared/data/t5_spiece/spiece.model).")
    return files.local_copy(spiece_model)


def sentencepiece_processor(spiece_model: str):
    """A `sentencepiece.SentencePieceProcessor` of `spiece_model` (no sentinels).

    Raises:
      CheckpointError: `spiece_model` does not exist.
    """
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=_check(spiece_model))


def _check_vocabulary(path: str) -> None:
    """Raises `CheckpointError` naming both accepted vocabularies unless `path` is a file."""
    if not files.isfile(path):
        import miniend_jax.checkpoints.bpe as bpe
        raise CheckpointError(f"vocabulary {path} {bpe.not_found(path)}; pass the path of a T5 spiece.model "
                              "(for example ../shared/data/t5_spiece/spiece.model) or of a byte-level BPE "
                              f"tokenizer (BART's: {bpe.FORMS}).")


def vocab_size(spiece_model: str, extra_ids: int = DEFAULT_EXTRA_IDS) -> int:
    """Number of ids: pieces plus sentinels (32,100 for the T5 vocabulary); for a byte-level BPE tokenizer
    path (`bpe.is_bpe`, BART's) its number of ids, `extra_ids` ignored.

    Raises:
      CheckpointError: `spiece_model` does not exist, or a BPE tokenizer does not load.
    """
    import miniend_jax.checkpoints.bpe as bpe
    if bpe.is_bpe(spiece_model):
        return bpe.vocab_size(spiece_model)
    _check_vocabulary(spiece_model)
    return sentencepiece_processor(spiece_model).get_piece_size() + extra_ids


def special_ids(path: str) -> dict[str, int]:
    """The pipeline ids a model must share with the tokenizer at `path`: `eos`, and `hf_pad` (the pad id of a
    BPE tokenizer's own vocabulary, BART's 1, which the pipeline swaps with 0; 0 for SentencePiece, which
    seqio pads with 0); without importing TensorFlow.

    Raises:
      CheckpointError: the tokenizer does not exist or does not load.
    """
    import miniend_jax.checkpoints.bpe as bpe
    if bpe.is_bpe(path):
        tokenizer, _ = bpe.load_tokenizer(path)
        pad = tokenizer.token_to_id(bpe.PAD)
        return {"eos": bpe.hf_to_pipeline(tokenizer.token_to_id(bpe.EOS), pad), "hf_pad": pad}
    _check_vocabulary(path)
    return {"eos": sentencepiece_processor(path).eos_id(), "hf_pad": 0}   # seqio pads with 0 whatever the model says


def seqio_vocabulary(spiece_model: str, extra_ids: int = DEFAULT_EXTRA_IDS):
    """A `seqio.SentencePieceVocabulary`, or for a byte-level BPE tokenizer path (`bpe.is_bpe`, BART's) a
    `bpe.ByteLevelBPEVocabulary` (`extra_ids` ignored). Imports seqio and so TensorFlow: data paths only.

    Raises:
      CheckpointError: `spiece_model` does not exist, or a BPE tokenizer does not load.
    """
    import miniend_jax.checkpoints.bpe as bpe
    if bpe.is_bpe(spiece_model):
        return bpe.ByteLevelBPEVocabulary(spiece_model)
    _check_vocabulary(spiece_model)
    import seqio
    return seqio.SentencePieceVocabulary(_check(spiece_model), extra_ids=extra_ids)


def hf_tokenizer(spiece_model: str, extra_ids: int = DEFAULT_EXTRA_IDS):
    """A `transformers.T5Tokenizer` over `spiece_model` with `extra_ids` sentinels.

    Its pipeline is set by `match_sentencepiece`, so it gives seqio's ids.

    Raises:
      CheckpointError: `spiece_model` does not exist.
    """
    import transformers
    spiece_model = _check(spiece_model)
    directory = os.path.dirname(os.path.abspath(spiece_model))
    if os.path.basename(spiece_model) == SPIECE_NAME:
        tokenizer = transformers.T5Tokenizer.from_pretrained(directory, extra_ids=extra_ids)
    else:
        with tempfile.TemporaryDirectory() as tmp:  # from_pretrained looks for the file by name
            shutil.copy(spiece_model, os.path.join(tmp, SPIECE_NAME))
            tokenizer = transformers.T5Tokenizer.from_pretrained(tmp, extra_ids=extra_ids)
    return match_sentencepiece(tokenizer, extra_ids)


def match_sentencepiece(tokenizer, extra_ids: int = DEFAULT_EXTRA_IDS):
    """Sets a HF T5 tokenizer's pipeline (in place) to encode as SentencePiece with seqio's sentinels does.

    - normalizer: SentencePiece's character map, then its whitespace rule (runs of spaces collapsed,
      trailing spaces removed);
    - pre-tokenizer: spaces become "▁", prepended to the start of the text only, not after a sentinel
      (transformers' `prepend_scheme="always"` adds a "▁" there that SentencePiece does not);
    - sentinels absorb the space before them (`lstrip`), as SentencePiece's user-defined pieces do.
    Returns the tokenizer.
    """
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
    backend = tokenizer.backend_tokenizer
    steps = [backend.normalizer] if backend.normalizer is not None else []
    backend.normalizer = normalizers.Sequence(steps + [normalizers.Replace(Regex(" {2,}"), " "),
                                                       normalizers.Replace(Regex(" +$"), "")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.add_special_tokens([AddedToken(f"<extra_id_{i}>", lstrip=True, rstrip=False, normalized=False,
                                           special=True) for i in range(extra_ids)])
    return tokenizer


def save_hf_tokenizer(spiece_model: str, directory: str, extra_ids: int = DEFAULT_EXTRA_IDS) -> None:
    """Writes the HF tokenizer files and `spiece.model` itself (for seqio users) into local `directory`.

    `tokenizer.json` holds the SentencePiece-matching pipeline (`match_sentencepiece`), and
    `tokenizer_config.json` names `PreTrainedTokenizerFast` so that `AutoTokenizer.from_pretrained` loads
    that pipeline as written; the `T5Tokenizer` class would rebuild transformers' own pipeline from the
    vocabulary and lose it.

    Raises:
      CheckpointError: `spiece_model` does not exist.
    """
    spiece_model = _check(spiece_model)
    hf_tokenizer(spiece_model, extra_ids).save_pretrained(directory)
    config_path = os.path.join(directory, "tokenizer_config.json")
    with open(config_path) as f:
        tokenizer_config = json.load(f)
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(config_path, "w") as f:
        json.dump(tokenizer_config, f, indent=2, sort_keys=True)
    target = os.path.join(directory, SPIECE_NAME)
    if os.path.abspath(spiece_model) != os.path.abspath(target):
        shutil.copy(spiece_model, target)


def train_sentencepiece(text_file: str, model_path: str, pieces: int, *, input_sentence_size: int = 200_000,
                        threads: int = 2) -> None:
    """Trains a unigram SentencePiece model with T5's conventions (pad 0, EOS 1, UNK 2, no BOS; the
    sentinels are added by the vocabulary wrappers above) on `text_file` (one sentence or paragraph per
    line), written to `model_path` (`<prefix>.model` and `<prefix>.vocab`). Does nothing when it exists.

    Args:
      text_file: UTF-8 text.
      model_path: ends in `.model`.
      pieces: vocabulary size without sentinels.
      input_sentence_size: lines sampled from `text_file` for training.
      threads: trainer threads.

    Raises:
      ValueError: `model_path` does not end in `.model`.
    """
    if os.path.exists(model_path):
        return
    if not model_path.endswith(".model"):
        raise ValueError(f"{model_path}: a SentencePiece model path ends in .model")
    import sentencepiece as spm
    os.makedirs(os.path.dirname(model_path) or ".", exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=text_file, model_prefix=model_path[: -len(".model")], vocab_size=pieces, model_type="unigram",
        character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True, num_threads=threads, minloglevel=2)
