"""The T5 SentencePiece vocabulary with sentinel ids, as seqio and as HF `transformers` see it.

Ids: the SentencePiece pieces (pad 0, eos 1, unk 2, ...) followed by `extra_ids` sentinels counted from
the top: `<extra_id_0>` is the last id, `vocab_size - 1`. Both views give identical ids (tested).

transformers 5 ignores `T5Tokenizer(vocab_file=...)` and maps every word to `<unk>`; the HF tokenizer
is therefore always built with `from_pretrained` on a directory holding `spiece.model`.

Where the two differ: HF parses special-token *strings* inside text (`<unk>`, `</s>`, and sentinels
glued to a word or to punctuation) into their ids; seqio and SentencePiece spell them out. Text without
such strings, and sentinels standing between words as span-corrupted text has them, encode identically.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from miniend_jax.errors import CheckpointError

DEFAULT_EXTRA_IDS = 100
SPIECE_NAME = "spiece.model"


def _check(spiece_model: str) -> str:
    if not os.path.isfile(spiece_model):
        raise CheckpointError(f"SentencePiece model {spiece_model} does not exist; pass the path of a "
                              "T5 spiece.model (for example ../shared/data/t5_spiece/spiece.model).")
    return spiece_model


def sentencepiece_processor(spiece_model: str):
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=_check(spiece_model))


def vocab_size(spiece_model: str, extra_ids: int = DEFAULT_EXTRA_IDS) -> int:
    """Number of ids: pieces plus sentinels (32,100 for the T5 vocabulary)."""
    return sentencepiece_processor(spiece_model).get_piece_size() + extra_ids


def seqio_vocabulary(spiece_model: str, extra_ids: int = DEFAULT_EXTRA_IDS):
    """A `seqio.SentencePieceVocabulary` (imports seqio and so TensorFlow: data paths only)."""
    import seqio
    return seqio.SentencePieceVocabulary(_check(spiece_model), extra_ids=extra_ids)


def hf_tokenizer(spiece_model: str, extra_ids: int = DEFAULT_EXTRA_IDS):
    """A `transformers.T5Tokenizer` over `spiece_model` with `extra_ids` sentinels."""
    import transformers
    _check(spiece_model)
    directory = os.path.dirname(os.path.abspath(spiece_model))
    if os.path.basename(spiece_model) == SPIECE_NAME:
        return transformers.T5Tokenizer.from_pretrained(directory, extra_ids=extra_ids)
    with tempfile.TemporaryDirectory() as tmp:  # from_pretrained looks for the file by name
        shutil.copy(spiece_model, os.path.join(tmp, SPIECE_NAME))
        return transformers.T5Tokenizer.from_pretrained(tmp, extra_ids=extra_ids)


def save_hf_tokenizer(spiece_model: str, directory: str, extra_ids: int = DEFAULT_EXTRA_IDS) -> None:
    """Writes the HF tokenizer files and `spiece.model` itself (for seqio users) into `directory`."""
    hf_tokenizer(spiece_model, extra_ids).save_pretrained(directory)
    target = os.path.join(directory, SPIECE_NAME)
    if os.path.abspath(spiece_model) != os.path.abspath(target):
        shutil.copy(spiece_model, target)
