"""A Flax BART encoder-decoder that computes what HF `transformers` `BartForConditionalGeneration` computes.

The model follows the seam in `models/interface.py` exactly as `models/t5.py` does: `Bart.__call__` takes
the batch features of `MODEL_INPUTS` by keyword and returns a `Seq2SeqOutput` with the requested taps; `encode`
and `decode` (with a `cache` collection for one-token steps, unrolled layout) are the decoding contract.

What makes it BART (HF `models/bart/modeling_bart.py`): token embeddings (times `sqrt(d_model)` with
`scale_embedding`) plus learned absolute positions read at `position + 2` (`BartLearnedPositionalEmbedding`'s
offset), `layernorm_embedding`, post-layer-norm blocks (residual, then LayerNorm), biased projections, the
query scaled by `head_dim ** -0.5`, GELU, and a head tied to the token table plus `final_logits_bias`.
Taps hold the projections as `q_proj`/`k_proj`/`v_proj` return them (bias added, query not yet scaled).

Ids are pipeline ids (padding 0, `models/bart_config.py`). Decoder inputs come from seqio's feature
converter, which starts each target with id 0; BART starts with `</s>` (`decoder_start_token_id`), so id 0
in `decoder_input_tokens` is read as the start token. Positions restart at 0 in each packed segment.

Parameters: `token_embedder/embedding` [vocab, d_model], `final_logits_bias` [vocab] (a buffer in HF:
held constant here by `stop_gradient`), and per stack `embed_positions/embedding` [max_positions + 2,
d_model], `layernorm_embedding`, `layers_<i>` (or scanned `layers`); initialised as HF does (normal, std
0.02; biases 0; layer norms 1 and 0).
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from miniend_jax.models.bart_config import BartConfig
from miniend_jax.models.common import MASK_VALUE, EncoderDecoder, cache_keys_values, remat_layer, scan_layers
from miniend_jax.models.interface import (AttentionTap, Taps, cross_attention_mask,
                                          decoder_attention_mask, encoder_attention_mask)

POSITION_OFFSET = 2   # BartLearnedPositionalEmbedding reads row position + 2 (fairseq's padding offset)
_INIT_STD = 0.02      # HF BartConfig.init_std


def _init(axes, initializer=None):
    return nn.with_logical_partitioning(initializer or nn.initializers.normal(_INIT_STD), axes)


def _activation(name: str):
    return {"gelu": lambda x: jax.nn.gelu(x, approximate=False),
            "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
            "relu": jax.nn.relu, "silu": jax.nn.silu}[name]


def segment_positions(length: int, segment_ids: jax.Array | None = None) -> jax.Array:
    """Token positions counted from the start of each packed segment.

    Args:
      length: the sequence length (static).
      segment_ids: optional int `[batch, length]` (seqio packing; 0 = padding).

    Returns:
      int32 `[1, length]` (`arange`) without segments, else `[batch, length]`, 0 at each segment's first token.
    """
    index = jnp.arange(length, dtype=jnp.int32)[None]
    if segment_ids is None:
        return index
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], 1)
    return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


class LayerNorm(nn.Module):
    """LayerNorm with scale and bias; statistics in float32, output in the compute dtype."""

    config: BartConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., d_model]` -> `[..., d_model]` in the compute dtype."""
        cfg = self.config
        dtype = jnp.dtype(cfg.param_dtype)
        scale = self.param("scale", _init(("embed",), nn.initializers.ones), (x.shape[-1],), dtype)
        bias = self.param("bias", _init(("embed",), nn.initializers.zeros), (x.shape[-1],), dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + cfg.layer_norm_epsilon)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(cfg.compute_dtype)


class DenseBias(nn.Module):
    """`x @ kernel + bias`: `[..., in] -> [..., features]`, kernel `[in, out]` with logical `axes`."""

    features: int
    axes: tuple[str, str]
    config: BartConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., in]` -> `[..., features]` in the compute dtype."""
        cfg = self.config
        dtype = jnp.dtype(cfg.param_dtype)
        kernel = self.param("kernel", _init(self.axes), (x.shape[-1], self.features), dtype)
        bias = self.param("bias", _init(self.axes[1:], nn.initializers.zeros), (self.features,), dtype)
        compute = cfg.compute_dtype
        return jnp.dot(x.astype(compute), kernel.astype(compute)) + bias.astype(compute)


class Attention(nn.Module):
    """BART attention (`BartAttention`): biased q/k/v/out projections, `softmax(q k^T / sqrt(d_kv)) v`.

    Same call and cache contract as `t5.MultiHeadAttention` (self-attention appends to `cached_key`/
    `cached_value` at `decode_position`; cross-attention projects the encoder output once).
    """

    config: BartConfig
    is_cross: bool = False

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, mask, *, deterministic: bool, decode: bool = False,
                 decode_position=None, max_decode_length=None) -> tuple[jax.Array, AttentionTap]:
        """`[batch, q_len, d_model]` queries over `[batch, kv_len, d_model]`; `mask` bool broadcastable to
        `[batch, heads, q_len, kv_len]`. Returns (output `[batch, q_len, d_model]`, this layer's tap)."""
        cfg = self.config
        project = lambda name: DenseBias(cfg.inner_dim, ("embed", "joined_kv"), cfg, name=name)
        q = project("query")(inputs_q)
        if decode and self.is_cross and self.has_variable("cache", "cross_key"):
            k, v = self.get_variable("cache", "cross_key"), self.get_variable("cache", "cross_value")
        else:
            k, v = project("key")(inputs_kv), project("value")(inputs_kv)
        q, k, v = (nn.with_logical_constraint(t, ("batch", "length", "joined_kv")) for t in (q, k, v))
        tap = AttentionTap(q, k, v)
        k, v = cache_keys_values(self, k, v, decode=decode, is_cross=self.is_cross, decode_position=decode_position,
                                 max_decode_length=max_decode_length)

        heads = lambda x: x.reshape(x.shape[:2] + (cfg.num_heads, cfg.d_kv)).transpose(0, 2, 1, 3)
        scaled_q = heads(q) * jnp.asarray(cfg.d_kv ** -0.5, q.dtype)
        scores = jnp.einsum("bhqd,bhkd->bhqk", scaled_q, heads(k), preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(jnp.where(mask, scores, MASK_VALUE), axis=-1)
        probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic).astype(cfg.compute_dtype)
        context = jnp.einsum("bhqk,bhkd->bhqd", probs, heads(v).astype(cfg.compute_dtype))
        context = context.transpose(0, 2, 1, 3).reshape(inputs_q.shape[:2] + (cfg.inner_dim,))
        return DenseBias(cfg.d_model, ("joined_kv", "embed"), cfg, name="out")(context), tap


class Mlp(nn.Module):
    """`fc2(dropout(act(fc1 x)))`: kernels `fc1` `[d_model, d_ff]`, `fc2` `[d_ff, d_model]`, with biases."""

    config: BartConfig

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        """`[batch, length, d_model]` -> the same shape, compute dtype."""
        cfg = self.config
        h = _activation(cfg.activation_function)(DenseBias(cfg.d_ff, ("embed", "mlp"), cfg, name="fc1")(x))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.activation_dropout)(h, deterministic=deterministic)
        return DenseBias(cfg.d_model, ("mlp", "embed"), cfg, name="fc2")(h)


def _add_and_norm(cfg: BartConfig, name: str, x, update, deterministic: bool):
    """Post-LN residual: `LayerNorm(x + dropout(update))`."""
    update = nn.Dropout(cfg.dropout_rate)(update, deterministic=deterministic)
    return LayerNorm(cfg, name=name)(nn.with_logical_constraint(x + update, ("batch", "length", "embed")))


class EncoderLayer(nn.Module):
    """`BartEncoderLayer`: self-attention, add & norm (`self_attn_layer_norm`), MLP, add & norm
    (`final_layer_norm`)."""

    config: BartConfig

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        """`[batch, enc_len, d_model]` -> (same shape, the self-attention tap)."""
        cfg = self.config
        h, tap = Attention(cfg, name="self_attn")(x, x, mask, deterministic=deterministic)
        x = _add_and_norm(cfg, "self_attn_layer_norm", x, h, deterministic)
        h = Mlp(cfg, name="mlp")(x, deterministic=deterministic)
        return _add_and_norm(cfg, "final_layer_norm", x, h, deterministic), tap


class DecoderLayer(nn.Module):
    """`BartDecoderLayer`: causal self-attention, cross-attention (`encoder_attn`), MLP, each followed by
    add & norm."""

    config: BartConfig

    @nn.compact
    def __call__(self, x, encoded, self_mask, cross_mask, deterministic: bool, decode: bool = False,
                 decode_position=None, max_decode_length=None):
        """`[batch, dec_len, d_model]` -> (same shape, self-attention tap, cross-attention tap)."""
        cfg = self.config
        h, self_tap = Attention(cfg, name="self_attn")(
            x, x, self_mask, deterministic=deterministic, decode=decode, decode_position=decode_position,
            max_decode_length=max_decode_length)
        x = _add_and_norm(cfg, "self_attn_layer_norm", x, h, deterministic)
        h, cross_tap = Attention(cfg, is_cross=True, name="encoder_attn")(
            x, encoded, cross_mask, deterministic=deterministic, decode=decode)
        x = _add_and_norm(cfg, "encoder_attn_layer_norm", x, h, deterministic)
        h = Mlp(cfg, name="mlp")(x, deterministic=deterministic)
        return _add_and_norm(cfg, "final_layer_norm", x, h, deterministic), self_tap, cross_tap


class _Stack(nn.Module):
    """What both stacks share: token and position embeddings, `layernorm_embedding`, dropout."""

    config: BartConfig
    embedder: nn.Module

    def _embed(self, tokens, positions, deterministic: bool):
        cfg = self.config
        x = self.embedder(tokens).astype(jnp.float32)
        if cfg.scale_embedding:
            x = x * (cfg.d_model ** 0.5)
        table = self.param("embed_positions", _init((None, "embed")),
                           (cfg.max_position_embeddings + POSITION_OFFSET, cfg.d_model), jnp.dtype(cfg.param_dtype))
        x = x + jnp.take(table.astype(jnp.float32), positions + POSITION_OFFSET, axis=0)
        x = LayerNorm(cfg, name="layernorm_embedding")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Encoder(_Stack):
    """`BartEncoder`: embeddings, then `num_encoder_layers` `EncoderLayer`s (no final norm)."""

    @nn.compact
    def __call__(self, tokens, segment_ids=None, *, deterministic: bool, tap_layers: Mapping[int, int] = None):
        """int `[batch, enc_len]` (0 = padding) -> (`[batch, enc_len, d_model]`, {key: AttentionTap})."""
        cfg = self.config
        tap_layers = tap_layers or {}
        x = self._embed(tokens, segment_positions(tokens.shape[1], segment_ids), deterministic)
        mask = encoder_attention_mask(tokens, segment_ids)
        layer_cls = remat_layer(EncoderLayer, cfg, static_argnums=(3,))
        if cfg.scan_layers:
            shape = tokens.shape + (cfg.inner_dim,)
            x, (taps,) = scan_layers(layer_cls, cfg, cfg.num_encoder_layers, deterministic, x,
                                     [(tap_layers, (shape, shape))], mask)
            return x, taps
        taps = {}
        for i in range(cfg.num_encoder_layers):
            x, tap = layer_cls(cfg, name=f"layers_{i}")(x, mask, deterministic)
            if i in tap_layers:
                taps[tap_layers[i]] = tap
        return x, taps


class Decoder(_Stack):
    """`BartDecoder` and the head: embeddings, `num_decoder_layers` `DecoderLayer`s, tied logits plus
    `final_logits_bias` (passed in by `Bart`)."""

    @nn.compact
    def __call__(self, encoded, encoder_tokens, decoder_input_tokens, decoder_target_tokens=None,
                 encoder_segment_ids=None, decoder_segment_ids=None, *, logits_bias, deterministic: bool,
                 decode: bool = False, decode_position=None, max_decode_length=None,
                 self_tap_layers: Mapping[int, int] = None, cross_tap_layers: Mapping[int, int] = None):
        """Decodes teacher-forced, or one cached step with `decode` (see `t5.Decoder`).

        Returns:
          (float32 logits `[batch, dec_len, vocab]`, {key: self-attention tap}, {key: cross-attention tap}).

        Raises:
          ValueError: `decode` with `config.scan_layers`.
        """
        cfg = self.config
        self_tap_layers, cross_tap_layers = self_tap_layers or {}, cross_tap_layers or {}
        tokens = jnp.where(decoder_input_tokens == 0, cfg.decoder_start_token_id, decoder_input_tokens)
        if decode:
            positions = jnp.reshape(decode_position, (1, 1)).astype(jnp.int32)
            self_mask = (jnp.arange(max_decode_length) <= decode_position)[None, None, None, :]
        else:
            positions = segment_positions(tokens.shape[1], decoder_segment_ids)
            self_mask = decoder_attention_mask(decoder_input_tokens, decoder_target_tokens, decoder_segment_ids)
        x = self._embed(tokens, positions, deterministic)
        cross_mask = cross_attention_mask(encoder_tokens, decoder_segment_ids, encoder_segment_ids)
        if cfg.scan_layers:
            if decode:
                raise ValueError("decode=True needs the unrolled layout: decode with "
                                 "`Bart(config.replace(scan_layers=False))` and `unstack_layers(params)`.")
            self_shape = tokens.shape + (cfg.inner_dim,)
            x, (self_taps, cross_taps) = scan_layers(
                remat_layer(DecoderLayer, cfg, static_argnums=(5,)), cfg, cfg.num_decoder_layers, deterministic, x,
                [(self_tap_layers, (self_shape, self_shape)),
                 (cross_tap_layers, (self_shape, encoder_tokens.shape + (cfg.inner_dim,)))],
                encoded, self_mask, cross_mask)
        else:
            layer_cls = DecoderLayer if decode else remat_layer(DecoderLayer, cfg, static_argnums=(5,))
            self_taps, cross_taps = {}, {}
            for i in range(cfg.num_decoder_layers):
                extra = (decode, decode_position, max_decode_length) if decode else ()
                x, self_tap, cross_tap = layer_cls(cfg, name=f"layers_{i}")(
                    x, encoded, self_mask, cross_mask, deterministic, *extra)
                if i in self_tap_layers:
                    self_taps[self_tap_layers[i]] = self_tap
                if i in cross_tap_layers:
                    cross_taps[cross_tap_layers[i]] = cross_tap
        logits = self.embedder.attend(x.astype(cfg.compute_dtype)).astype(jnp.float32)
        logits = logits + jax.lax.stop_gradient(logits_bias.astype(jnp.float32))
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab")), self_taps, cross_taps


class Bart(EncoderDecoder):
    """BART encoder-decoder, the `models/interface.py` seam's implementation for the BART family.

    Parameters: `token_embedder` (`embedding` `[vocab, d_model]`), `final_logits_bias`, `encoder`,
    `decoder`; their HF names are in `checkpoints/hf_bart.py`. Same methods and arguments as `t5.T5`.
    """

    config: BartConfig

    def setup(self):
        cfg = self.config
        self.token_embedder = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=_init(("vocab", "embed")), name="token_embedder")
        self.final_logits_bias = self.param("final_logits_bias", _init(("vocab",), nn.initializers.zeros),
                                            (cfg.vocab_size,), jnp.dtype(cfg.param_dtype))
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, *, enable_dropout: bool = False,
               taps: Taps = Taps()):
        """Encoder pass: (encoded `[batch, enc_len, d_model]`, {layer as requested: AttentionTap}).

        Raises:
          ValueError: a tap outside the stack.
        """
        return self.encoder(encoder_input_tokens, encoder_segment_ids, deterministic=not enable_dropout,
                            tap_layers=taps.resolve(self.config)["encoder_self"])

    def decode(self, encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
               encoder_segment_ids=None, decoder_segment_ids=None, *, enable_dropout: bool = False,
               decode: bool = False, decode_position=None, max_decode_length: int | None = None,
               taps: Taps = Taps()):
        """Decoder pass, teacher-forced or one cached step (arguments and returns as `t5.T5.decode`).

        Raises:
          ValueError: `decode` without `decode_position`/`max_decode_length`, with `config.scan_layers`, or
            a tap outside its stack.
        """
        if decode and (decode_position is None or max_decode_length is None):
            raise ValueError("decode=True needs decode_position and max_decode_length.")
        resolved = taps.resolve(self.config)
        return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                            encoder_segment_ids, decoder_segment_ids, logits_bias=self.final_logits_bias,
                            deterministic=not enable_dropout, decode=decode, decode_position=decode_position,
                            max_decode_length=max_decode_length, self_tap_layers=resolved["decoder_self"],
                            cross_tap_layers=resolved["cross"])



def attention_logits_terms(config: BartConfig, params, kind: str, query_length: int, key_length: int):
    """What BART applies to the taps' `q . k` to get its attention scores (see `t5.attention_logits_terms`):
    scale `d_kv ** -0.5`, no bias (positions are in the embeddings)."""
    del params, kind, query_length, key_length
    return config.d_kv ** -0.5, 0.0
