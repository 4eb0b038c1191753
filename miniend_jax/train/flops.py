"""FLOPs of a training step, for achieved TFLOP/s and MFU.

Training a model costs three forward passes (forward, plus backward for activations and weights); the
teacher runs forward only. The forward count of each family is in `models/flops.py`.
"""

from __future__ import annotations

from miniend_jax.models.registry import forward_flops

__all__ = ["forward_flops", "train_flops"]


def train_flops(config, batch: int, encoder_length: int, decoder_length: int) -> float:
    """FLOPs of one training step (forward and backward): three times `forward_flops`.

    Args:
      config: any family's model config.
      batch: sequences in the batch; encoder_length, decoder_length: padded lengths in tokens.
    """
    return 3.0 * forward_flops(config, batch, encoder_length, decoder_length)
