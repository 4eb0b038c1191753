"""Checkpoints: orbax train states (`state.py`), HF directories of every family in and out (`hf.py`, with
`hf_t5.py` and `hf_bart.py`), the T5 SentencePiece vocabulary (`tokenizer.py`) and BART's byte-level BPE
(`bpe.py`). Importing it does not import TensorFlow."""

from miniend_jax.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint

__all__ = ["load_hf_checkpoint", "save_hf_checkpoint"]
