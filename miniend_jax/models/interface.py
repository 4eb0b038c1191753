"""What every encoder-decoder model family shares with the training and distillation code.

A model family (today `models/t5.py`) is a Flax module whose `__call__` takes the batch features named
in `MODEL_INPUTS` as keyword arguments, plus `enable_dropout: bool` and `taps: Taps`, and returns a
`Seq2SeqOutput`. The step (`train/step.py`) and the distillation terms (`distill/`) rely on nothing
else: taps, the output type and the attention masks are defined here, not in a model module.

Masks follow seqio's feature converters (`EncDecFeatureConverter`): token id 0 is padding, and
`*_segment_ids` (packed examples) restrict attention to the same segment. Every mask is bool, True
where attention is allowed, shaped to broadcast against `[batch, heads, query_length, key_length]`.

This module imports no model code, so any module may import it without a cycle.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Protocol

import jax
import jax.numpy as jnp

# The batch features a model takes, by keyword (seqio `EncDecFeatureConverter` names). Features other
# than the first two are optional; the step passes those present in the batch.
MODEL_INPUTS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                "encoder_segment_ids", "decoder_segment_ids")

# The attention modules a tap can name: encoder self-attention, decoder self-attention, and the
# decoder's attention over the encoder output.
ATTENTION_KINDS = ("encoder_self", "decoder_self", "cross")


# ---------------------------------------------------------------------------------------------
# Taps
# ---------------------------------------------------------------------------------------------
class AttentionTap(NamedTuple):
    """Projected attention inputs of one layer, each `[batch, length, heads * d_kv]` in the compute dtype.

    For cross-attention, `q` has the decoder length and `k`, `v` the encoder length.
    """

    q: jax.Array
    k: jax.Array
    v: jax.Array


class _StackDepths(Protocol):
    num_encoder_layers: int
    num_decoder_layers: int


@dataclasses.dataclass(frozen=True)
class Taps:
    """Which layers' Q/K/V a forward pass returns, per attention kind (`ATTENTION_KINDS`).

    Each field is a tuple of layer indices into that kind's stack; negative indices count from the end.
    """

    encoder_self: tuple[int, ...] = ()
    decoder_self: tuple[int, ...] = ()
    cross: tuple[int, ...] = ()

    def resolve(self, config: _StackDepths) -> dict[str, dict[int, int]]:
        """Absolute layer indices of the requested taps.

        Args:
          config: any model config with `num_encoder_layers` and `num_decoder_layers`.

        Returns:
          {kind: {absolute layer index: index as requested}} for every kind in `ATTENTION_KINDS`.

        Raises:
          ValueError: an index lies outside `[-depth, depth)` of its stack.
        """
        depth = {"encoder_self": config.num_encoder_layers,
                 "decoder_self": config.num_decoder_layers,
                 "cross": config.num_decoder_layers}
        resolved = {}
        for kind in ATTENTION_KINDS:
            layers = {}
            for index in getattr(self, kind):
                if not -depth[kind] <= index < depth[kind]:
                    raise ValueError(f"tap {kind}[{index}] is outside the {depth[kind]} layers of that "
                                     "stack; use an index in [-depth, depth).")
                layers[index % depth[kind]] = index
            resolved[kind] = layers
        return resolved


class Seq2SeqOutput(NamedTuple):
    """A teacher-forced forward pass of an encoder-decoder.

    Attributes:
      logits: float32 `[batch, decoder_length, vocab]`, unnormalised next-token scores.
      taps: {kind: {layer index as requested in `Taps`: AttentionTap}}, one entry per kind in
        `ATTENTION_KINDS` (empty dicts for kinds not tapped).
    """

    logits: jax.Array
    taps: Mapping[str, Mapping[int, AttentionTap]]


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------
def _key_mask(valid: jax.Array) -> jax.Array:
    """`[batch, k]` bool -> `[batch, 1, 1, k]`."""
    return valid[:, None, None, :]


def _segment_mask(query_segments: jax.Array, key_segments: jax.Array) -> jax.Array:
    """`[batch, q]`, `[batch, k]` -> `[batch, 1, q, k]`: True where both lie in the same segment."""
    return (query_segments[:, :, None] == key_segments[:, None, :])[:, None]


def encoder_attention_mask(tokens: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
    """Encoder self-attention mask: keys that are not padding (and in the query's segment if packed).

    Args:
      tokens: int `[batch, enc_len]`, 0 = padding.
      segment_ids: optional int `[batch, enc_len]`, packed-example ids.

    Returns:
      bool `[batch, 1, 1, enc_len]`, or `[batch, 1, enc_len, enc_len]` with `segment_ids`.
    """
    mask = _key_mask(tokens > 0)
    if segment_ids is not None:
        mask = mask & _segment_mask(segment_ids, segment_ids)
    return mask


def decoder_attention_mask(decoder_input_tokens: jax.Array, decoder_target_tokens: jax.Array | None = None,
                           segment_ids: jax.Array | None = None) -> jax.Array:
    """Decoder self-attention mask: causal, restricted to non-padding targets and to the segment.

    Without `decoder_target_tokens` only causality (and segments) apply: padding sits at the end, so
    valid positions never see it; padded positions produce values nobody reads.

    Args:
      decoder_input_tokens: int `[batch, dec_len]` (only its shape is used).
      decoder_target_tokens: optional int `[batch, dec_len]`, 0 = padding; masks padded keys.
      segment_ids: optional int `[batch, dec_len]`, packed-example ids.

    Returns:
      bool `[1, 1, dec_len, dec_len]` (causal only) or `[batch, 1, dec_len, dec_len]`.
    """
    length = decoder_input_tokens.shape[1]
    mask = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    if decoder_target_tokens is not None:
        mask = mask & _key_mask(decoder_target_tokens > 0)
    if segment_ids is not None:
        mask = mask & _segment_mask(segment_ids, segment_ids)
    return mask


def cross_attention_mask(encoder_tokens: jax.Array, decoder_segment_ids: jax.Array | None = None,
                         encoder_segment_ids: jax.Array | None = None) -> jax.Array:
    """Cross-attention mask: non-padding encoder positions of the same segment.

    Args:
      encoder_tokens: int `[batch, enc_len]`, 0 = padding.
      decoder_segment_ids: optional int `[batch, dec_len]`; used only together with
        `encoder_segment_ids`.
      encoder_segment_ids: optional int `[batch, enc_len]`.

    Returns:
      bool `[batch, 1, 1, enc_len]`, or `[batch, 1, dec_len, enc_len]` with both segment ids.
    """
    mask = _key_mask(encoder_tokens > 0)
    if decoder_segment_ids is not None and encoder_segment_ids is not None:
        mask = mask & _segment_mask(decoder_segment_ids, encoder_segment_ids)
    return mask
