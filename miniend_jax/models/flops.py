"""Matmul FLOPs of one teacher-forced forward pass, counted from a family's shape.

Counts every matrix multiply: projections, attention scores and context, feed-forward, and the output head.
Norms, softmax, biases, embeddings and the distillation losses are left out (a few percent at most).
"""

from __future__ import annotations


def _transformer_flops(*, d_model: int, inner: int, ffn_matrices: int, d_ff: int, encoder_layers: int,
                       decoder_layers: int, vocab: int, batch: int, encoder_length: int,
                       decoder_length: int) -> float:
    """FLOPs (multiply-adds x 2) of a standard encoder-decoder with `ffn_matrices` `d_model x d_ff` FFN kernels."""
    d, le, ld = d_model, encoder_length, decoder_length
    ffn = ffn_matrices * d * d_ff
    encoder_layer = le * (4 * d * inner + ffn) + 2 * le * le * inner
    decoder_layer = (ld * (4 * d * inner)                       # self-attention projections
                     + ld * 2 * d * inner + le * 2 * d * inner  # cross: q, o on decoder; k, v on encoder
                     + ld * ffn
                     + 2 * ld * ld * inner + 2 * ld * le * inner)  # scores and context
    head = ld * d * vocab
    return 2.0 * batch * (encoder_layers * encoder_layer + decoder_layers * decoder_layer + head)


def t5_forward_flops(config, batch: int, encoder_length: int, decoder_length: int) -> float:
    """A T5 pass (`T5Config`): width `num_heads * d_kv`, two or three (gated) FFN kernels.

    Args:
      config: the model's shape.
      batch: sequences in the batch.
      encoder_length, decoder_length: padded lengths in tokens (padding is counted).

    Returns:
      FLOPs as a float.
    """
    return _transformer_flops(d_model=config.d_model, inner=config.inner_dim, ffn_matrices=3 if config.is_gated else 2,
                              d_ff=config.d_ff, encoder_layers=config.num_encoder_layers,
                              decoder_layers=config.num_decoder_layers, vocab=config.vocab_size, batch=batch,
                              encoder_length=encoder_length, decoder_length=decoder_length)


def bart_forward_flops(config, batch: int, encoder_length: int, decoder_length: int) -> float:
    """A BART pass (`BartConfig`): attention width `d_model`, two FFN kernels; arguments as `t5_forward_flops`."""
    return _transformer_flops(d_model=config.d_model, inner=config.inner_dim, ffn_matrices=2, d_ff=config.d_ff,
                              encoder_layers=config.num_encoder_layers, decoder_layers=config.num_decoder_layers,
                              vocab=config.vocab_size, batch=batch, encoder_length=encoder_length,
                              decoder_length=decoder_length)
