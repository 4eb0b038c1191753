"""Matmul FLOPs of a T5 pass, counted from the shape (for achieved TFLOP/s and MFU).

Counts every matrix multiply: projections, attention scores and context, FFN, and the output head.
Norms, softmax and the distillation losses are left out (a few percent at most). Training a model
costs three forward passes (forward, plus backward for activations and weights); the teacher runs
forward only.
"""

from __future__ import annotations

from miniend_jax.models.config import T5Config


def forward_flops(config: T5Config, batch: int, encoder_length: int, decoder_length: int) -> float:
    """FLOPs (multiply-adds x 2) of one teacher-forced forward pass over a padded batch.

    Args:
      config: the model's shape.
      batch: sequences in the batch.
      encoder_length, decoder_length: padded lengths in tokens (padding is counted).

    Returns:
      FLOPs as a float.
    """
    d, inner, ff = config.d_model, config.inner_dim, config.d_ff
    ffn = (3 if config.is_gated else 2) * d * ff
    le, ld = encoder_length, decoder_length
    encoder_layer = le * (4 * d * inner + ffn) + 2 * le * le * inner
    decoder_layer = (ld * (4 * d * inner)            # self-attention projections
                     + ld * 2 * d * inner + le * 2 * d * inner  # cross: q, o on decoder; k, v on encoder
                     + ld * ffn
                     + 2 * ld * ld * inner + 2 * ld * le * inner)  # scores and context
    head = ld * d * config.vocab_size
    total = config.num_encoder_layers * encoder_layer + config.num_decoder_layers * decoder_layer + head
    return 2.0 * batch * total


def train_flops(config: T5Config, batch: int, encoder_length: int, decoder_length: int) -> float:
    """FLOPs of one training step (forward and backward): three times `forward_flops`."""
    return 3.0 * forward_flops(config, batch, encoder_length, decoder_length)
