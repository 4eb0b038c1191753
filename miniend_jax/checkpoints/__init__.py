"""Checkpoints: HF T5 directories in and out, and the T5 vocabulary. Does not import TensorFlow."""

from miniend_jax.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint

__all__ = ["load_hf_checkpoint", "save_hf_checkpoint"]
