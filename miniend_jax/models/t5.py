"""A Flax T5 encoder-decoder that computes what HF `transformers` T5 computes.

Covers T5 v1.0 (ReLU, tied, scaled head), v1.1 / Flan-T5 / mT5 (gated-GELU, untied head),
`num_heads * d_kv != d_model`, and unequal encoder/decoder depths. Every parameter carries logical axis
names (t5x style) so that `parallel.py` can shard it over a (data, fsdp, tensor) mesh, and the main
activations carry logical constraints.

The model follows the seam in `models/interface.py`: `T5.__call__` takes the batch features of
`MODEL_INPUTS` by keyword and returns a `Seq2SeqOutput`. Distillation "taps": `Taps` names layers of the
three attention kinds; the projected queries, keys and values of exactly those layers
(`[batch, length, heads * d_kv]`) are returned beside the logits. Nothing else is materialised for
distillation.

Layouts: by default each layer is its own module (`layers_0`, `layers_1`, ...). With
`config.scan_layers` each stack is one `nn.scan` over a single layer (`layers`, parameters stacked on a
leading depth axis): one layer is traced and compiled, and its intermediates are freed every iteration.
`models/common.py`'s `stack_layers` / `unstack_layers` convert parameters between the two; decoding runs
unrolled.

Initialisation (`models/registry.py` `init_params`): untruncated normals with t5x's standard deviations
(fan-in scaled kernels, the query's divided by sqrt(d_kv), embeddings 1; see each module's stddev). Where
t5x differs (t5x `examples/t5/layers.py`, `network.py`): it draws the feed-forward and untied output kernels
from a normal truncated at two standard deviations (same variance), and the relative-position tables
uniformly with fan-avg scaling (std `(2 / (heads + buckets)) ** 0.5`); here they are untruncated normals,
the tables with std `d_model ** -0.5`.

Masks (`models/interface.py`) follow seqio's feature converters: token id 0 is padding, and
`*_segment_ids` (packed examples) restrict attention to the same segment. Relative positions are taken
from array positions; inside one packed segment they equal the differences of seqio's `*_positions`, and
pairs across segments are masked, so the positions features are not needed.

References: HF `transformers` `models/t5/modeling_t5.py` (the numerics matched, see
tests/models/test_t5_golden.py), and t5x / Mesh TensorFlow for initialisation and parameter names.
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from miniend_jax.models.common import MASK_VALUE, EncoderDecoder, cache_keys_values, remat_layer, scan_layers
from miniend_jax.models.config import T5Config
from miniend_jax.models.interface import (AttentionTap, Taps, cross_attention_mask,
                                          decoder_attention_mask, encoder_attention_mask)



# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> np.ndarray:
    """T5's bucketing of `memory_position - query_position`.

    Half of the buckets hold exact small distances, the other half logarithmically wider ones up to
    `max_distance`; with `bidirectional` the buckets are split between negative and positive offsets.
    Computed in numpy float32 on static shapes, at trace time. Source: Mesh TensorFlow
    `transformer_layers._relative_position_bucket`, as in HF `modeling_t5.py`
    (`T5Attention._relative_position_bucket`).

    Args:
      relative_position: int array of any shape, key position minus query position (in tokens).
      bidirectional: True for encoder self-attention; False (decoder) buckets only offsets <= 0.
      num_buckets: total number of buckets (`relative_attention_num_buckets`).
      max_distance: offsets at or beyond this distance share the last bucket.

    Returns:
      int64 array of the input's shape, bucket ids in `[0, num_buckets)`.
    """
    relative_position = np.asarray(relative_position, dtype=np.int64)
    buckets = np.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).astype(np.int64) * num_buckets
        distance = np.abs(relative_position)
    else:
        distance = -np.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    with np.errstate(divide="ignore"):
        log_ratio = np.log(distance.astype(np.float32) / np.float32(max_exact))
    scaled = log_ratio / np.float32(np.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, distance, large)


def _param_init(stddev: float, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


def _activation(name: str):
    return {"relu": jax.nn.relu,
            "gelu": lambda x: jax.nn.gelu(x, approximate=False),
            "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
            "silu": jax.nn.silu}[name]


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, no bias; statistics in float32.

    `x * rsqrt(mean(x^2) + eps) * scale` over the last axis (Zhang & Sennrich 2019, "Root Mean Square
    Layer Normalization"; HF `modeling_t5.py` `T5LayerNorm`). Parameter: `scale` `[features]`, ones.
    """

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., features]` (any float dtype) -> `[..., features]` in the compute dtype."""
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), jnp.dtype(self.config.param_dtype))
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
                                  + self.config.layer_norm_epsilon)
        return (x32 * scale.astype(jnp.float32)).astype(self.config.compute_dtype)


class Dense(nn.Module):
    """A bias-free projection `[..., in] -> [..., out]` with a logically named kernel.

    Attributes:
      features: output width.
      axes: logical axis names of the `[in, out]` kernel (see `parallel.py`).
      stddev: standard deviation of the normal initialiser.
      config: supplies the parameter and compute dtypes.
    """

    features: int
    axes: tuple[str, str]
    stddev: float
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., in]` -> `[..., features]`, computed and returned in the compute dtype."""
        kernel = self.param("kernel", _param_init(self.stddev, self.axes), (x.shape[-1], self.features),
                            jnp.dtype(self.config.param_dtype))
        dtype = self.config.compute_dtype
        return jnp.dot(x.astype(dtype), kernel.astype(dtype))


class RelativePositionBias(nn.Module):
    """Learned per-head bias indexed by relative-position bucket; one table per stack, shared by layers.

    Parameter: `rel_embedding` `[relative_attention_num_buckets, num_heads]`, initialised normal with std
    `d_model ** -0.5` (t5x: uniform, fan-avg; see the module docstring). Buckets from `relative_position_bucket`;
    as HF `modeling_t5.py` `T5Attention.compute_bias`.

    Attributes:
      config: the model config.
      bidirectional: True for the encoder, False for the decoder's causal self-attention.
    """

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_length: int, key_length: int, query_offset: jax.Array | int = 0) -> jax.Array:
        """The additive attention bias of every (query, key) pair.

        Args:
          query_length, key_length: static lengths in tokens.
          query_offset: position of the first query; a traced int32 scalar in one-token decoding steps.

        Returns:
          float32 `[1, heads, query_length, key_length]`.
        """
        cfg = self.config
        table = self.param("rel_embedding", _param_init(cfg.d_model ** -0.5, ("relpos_buckets", "relpos_heads")),
                           (cfg.relative_attention_num_buckets, cfg.num_heads), jnp.dtype(cfg.param_dtype))
        if isinstance(query_offset, int):
            relative = np.arange(key_length)[None, :] - np.arange(query_offset, query_offset + query_length)[:, None]
            buckets = jnp.asarray(relative_position_bucket(
                relative, self.bidirectional, cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance), dtype=jnp.int32)
        else:
            # Bucket every offset a decoding step can see, then select the step's row.
            relative = np.arange(key_length)[None, :] - np.arange(key_length)[:, None]
            all_buckets = jnp.asarray(relative_position_bucket(
                relative, self.bidirectional, cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance), dtype=jnp.int32)
            buckets = jax.lax.dynamic_slice_in_dim(all_buckets, query_offset, query_length, axis=0)
        values = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [q, k, heads]
        return jnp.transpose(values, (2, 0, 1))[None]


class MultiHeadAttention(nn.Module):
    """T5 attention: no 1/sqrt(d_kv) scaling (folded into the query initialisation), additive position bias.

    `softmax(q k^T + bias, masked) v` per head, then the output projection; as Mesh TensorFlow's
    T5 attention and HF `modeling_t5.py` `T5Attention`. Parameters: `query`, `key`, `value` kernels
    `[d_model, heads * d_kv]` and `out` `[heads * d_kv, d_model]`; the query's initial stddev is
    `(d_model * d_kv) ** -0.5` (t5x). Scores and softmax are float32; masked scores are set to -1e10.

    Attributes:
      config: the model config.
      is_cross: cross-attention (keys and values from the encoder output, cached once when decoding).
    """

    config: T5Config
    is_cross: bool = False

    @nn.compact
    def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, bias: jax.Array | None, mask: jax.Array,
                 *, deterministic: bool, decode: bool = False, decode_position: jax.Array | None = None,
                 max_decode_length: int | None = None) -> tuple[jax.Array, AttentionTap]:
        """One attention module.

        With `decode`, self-attention appends this step's key/value to the `cache` collection at
        `decode_position`, and cross-attention projects the encoder output once and reuses it.

        Args:
          inputs_q: `[batch, q_len, d_model]`, compute dtype.
          inputs_kv: `[batch, kv_len, d_model]` (the same array as `inputs_q` for self-attention).
          bias: float32, broadcastable to `[batch, heads, q_len, kv_len]`, or None (cross-attention).
          mask: bool, broadcastable to `[batch, heads, q_len, kv_len]`; True = attend.
          deterministic: no dropout when True.
          decode: one-token decoding step against the `cache` collection (`mutable=["cache"]`).
          decode_position: int32 scalar, the step's position (self-attention with `decode`).
          max_decode_length: static length of the self-attention cache (self-attention with `decode`).

        Returns:
          (output `[batch, q_len, d_model]` in the compute dtype, this layer's `AttentionTap` of the
          projections before caching).
        """
        cfg = self.config
        project = lambda name, stddev: Dense(cfg.inner_dim, ("embed", "joined_kv"), stddev, cfg, name=name)
        q = project("query", (cfg.d_model * cfg.d_kv) ** -0.5)(inputs_q)
        if decode and self.is_cross and self.has_variable("cache", "cross_key"):
            k = self.get_variable("cache", "cross_key")
            v = self.get_variable("cache", "cross_value")
        else:
            k = project("key", cfg.d_model ** -0.5)(inputs_kv)
            v = project("value", cfg.d_model ** -0.5)(inputs_kv)
        q = nn.with_logical_constraint(q, ("batch", "length", "joined_kv"))
        k = nn.with_logical_constraint(k, ("batch", "length", "joined_kv"))
        v = nn.with_logical_constraint(v, ("batch", "length", "joined_kv"))
        tap = AttentionTap(q, k, v)

        k, v = cache_keys_values(self, k, v, decode=decode, is_cross=self.is_cross, decode_position=decode_position,
                                 max_decode_length=max_decode_length)

        # Heads-major [batch, heads, length, d_kv] operands: XLA:CPU lowers these batched matmuls to
        # fast kernels, while the `bkhd` forms became a slow fused kernel (bench/README.md).
        heads = lambda x: x.reshape(x.shape[:2] + (cfg.num_heads, cfg.d_kv)).transpose(0, 2, 1, 3)
        scores = jnp.einsum("bhqd,bhkd->bhqk", heads(q), heads(k), preferred_element_type=jnp.float32)
        if bias is not None:
            scores = scores + bias
        scores = jnp.where(mask, scores, MASK_VALUE)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = nn.Dropout(cfg.dropout_rate)(probs, deterministic=deterministic).astype(cfg.compute_dtype)
        context = jnp.einsum("bhqk,bhkd->bhqd", probs, heads(v).astype(cfg.compute_dtype))
        context = context.transpose(0, 2, 1, 3).reshape(inputs_q.shape[:2] + (cfg.inner_dim,))
        out = Dense(cfg.d_model, ("joined_kv", "embed"), cfg.inner_dim ** -0.5, cfg, name="out")(context)
        return out, tap


class MlpBlock(nn.Module):
    """T5 feed-forward: `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`.

    The gated form is T5 v1.1's (Shazeer 2020, "GLU Variants Improve Transformer"; HF `modeling_t5.py`
    `T5DenseGatedActDense`). Kernels: `wi` / `wi_0` / `wi_1` `[d_model, d_ff]`, `wo` `[d_ff, d_model]`.
    """

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        """`[batch, length, d_model]` -> `[batch, length, d_model]`, compute dtype; dropout unless
        `deterministic`."""
        cfg = self.config
        act = _activation(cfg.activation)
        if cfg.is_gated:
            hidden = act(Dense(cfg.d_ff, ("embed", "mlp"), cfg.d_model ** -0.5, cfg, name="wi_0")(x))
            hidden = hidden * Dense(cfg.d_ff, ("embed", "mlp"), cfg.d_model ** -0.5, cfg, name="wi_1")(x)
        else:
            hidden = act(Dense(cfg.d_ff, ("embed", "mlp"), cfg.d_model ** -0.5, cfg, name="wi")(x))
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
        hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=deterministic)
        return Dense(cfg.d_model, ("mlp", "embed"), cfg.d_ff ** -0.5, cfg, name="wo")(hidden)


def _residual_dropout(config: T5Config, x: jax.Array, update: jax.Array, deterministic: bool) -> jax.Array:
    update = nn.Dropout(config.dropout_rate)(update, deterministic=deterministic)
    return nn.with_logical_constraint(x + update, ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
    """One pre-norm encoder block: self-attention, then feed-forward, each with a residual connection.

    As HF `modeling_t5.py` `T5Block` of the encoder. Submodules: `pre_attention_layer_norm`,
    `attention`, `pre_mlp_layer_norm`, `mlp`.
    """

    config: T5Config

    @nn.compact
    def __call__(self, x, bias, mask, deterministic: bool):
        """Encoder block forward.

        Args:
          x: `[batch, enc_len, d_model]`, compute dtype.
          bias: float32 `[1, heads, enc_len, enc_len]` (the stack's shared `RelativePositionBias`).
          mask: bool, broadcastable to `[batch, 1, enc_len, enc_len]` (`encoder_attention_mask`).
          deterministic: no dropout when True (positional: it is static under `nn.remat`).

        Returns:
          (`[batch, enc_len, d_model]`, the self-attention `AttentionTap`).
        """
        cfg = self.config
        h = RMSNorm(cfg, name="pre_attention_layer_norm")(x)
        h, tap = MultiHeadAttention(cfg, name="attention")(h, h, bias, mask, deterministic=deterministic)
        x = _residual_dropout(cfg, x, h, deterministic)
        h = RMSNorm(cfg, name="pre_mlp_layer_norm")(x)
        h = MlpBlock(cfg, name="mlp")(h, deterministic=deterministic)
        return _residual_dropout(cfg, x, h, deterministic), tap


class DecoderLayer(nn.Module):
    """One pre-norm decoder block: causal self-attention, cross-attention, feed-forward, each residual.

    As HF `modeling_t5.py` `T5Block` of the decoder. Submodules: `pre_self_attention_layer_norm`,
    `self_attention`, `pre_cross_attention_layer_norm`, `encoder_decoder_attention`,
    `pre_mlp_layer_norm`, `mlp`.
    """

    config: T5Config

    @nn.compact
    def __call__(self, x, encoded, self_bias, self_mask, cross_mask, deterministic: bool,
                 decode: bool = False, decode_position=None, max_decode_length=None):
        """Decoder block forward.

        Args:
          x: `[batch, dec_len, d_model]` (`dec_len` is 1 with `decode`), compute dtype.
          encoded: `[batch, enc_len, d_model]`, the encoder output.
          self_bias: float32 `[1, heads, dec_len, dec_len]` (or `[1, heads, 1, max_decode_length]`).
          self_mask: bool, broadcastable to the self-attention scores (`decoder_attention_mask`).
          cross_mask: bool, broadcastable to `[batch, 1, dec_len, enc_len]` (`cross_attention_mask`).
          deterministic: no dropout when True (positional: it is static under `nn.remat`).
          decode, decode_position, max_decode_length: a one-token cached step, see `MultiHeadAttention`.

        Returns:
          (`[batch, dec_len, d_model]`, self-attention `AttentionTap`, cross-attention `AttentionTap`).
        """
        cfg = self.config
        h = RMSNorm(cfg, name="pre_self_attention_layer_norm")(x)
        h, self_tap = MultiHeadAttention(cfg, name="self_attention")(
            h, h, self_bias, self_mask, deterministic=deterministic, decode=decode,
            decode_position=decode_position, max_decode_length=max_decode_length)
        x = _residual_dropout(cfg, x, h, deterministic)
        h = RMSNorm(cfg, name="pre_cross_attention_layer_norm")(x)
        h, cross_tap = MultiHeadAttention(cfg, is_cross=True, name="encoder_decoder_attention")(
            h, encoded, None, cross_mask, deterministic=deterministic, decode=decode)
        x = _residual_dropout(cfg, x, h, deterministic)
        h = RMSNorm(cfg, name="pre_mlp_layer_norm")(x)
        h = MlpBlock(cfg, name="mlp")(h, deterministic=deterministic)
        return _residual_dropout(cfg, x, h, deterministic), self_tap, cross_tap


# ---------------------------------------------------------------------------------------------
# Stacks and the model
# ---------------------------------------------------------------------------------------------
class _Stack(nn.Module):
    """What the encoder and decoder stacks share: the config and the token table.

    Attributes:
      config: the model config.
      embedder: the shared `nn.Embed` token table (owned by `T5`).
    """

    config: T5Config
    embedder: nn.Module

    def _embed(self, tokens: jax.Array, deterministic: bool) -> jax.Array:
        """Token embeddings `[batch, length, d_model]` in the compute dtype, after dropout."""
        x = self.embedder(tokens).astype(self.config.compute_dtype)
        x = nn.Dropout(self.config.dropout_rate)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Encoder(_Stack):
    """The encoder stack: embedding, `num_encoder_layers` `EncoderLayer`s, final `RMSNorm` (`encoder_norm`).

    One bidirectional `RelativePositionBias` (`relpos_bias`) is shared by all layers, as in T5.
    """

    @nn.compact
    def __call__(self, tokens, segment_ids=None, *, deterministic: bool, tap_layers: Mapping[int, int] = {}):
        """Encodes a batch.

        Args:
          tokens: int `[batch, enc_len]`, 0 = padding.
          segment_ids: optional int `[batch, enc_len]`, packed-example ids.
          deterministic: no dropout when True.
          tap_layers: {absolute layer index: key in the returned taps} (from `Taps.resolve`).

        Returns:
          (encoded `[batch, enc_len, d_model]` in the compute dtype, {key: AttentionTap}).
        """
        cfg = self.config
        x = self._embed(tokens, deterministic)
        length = tokens.shape[1]
        bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(length, length)
        mask = encoder_attention_mask(tokens, segment_ids)
        layer_cls = remat_layer(EncoderLayer, cfg, static_argnums=(4,))
        if cfg.scan_layers:
            shape = tokens.shape + (cfg.inner_dim,)
            x, (taps,) = scan_layers(layer_cls, cfg, cfg.num_encoder_layers, deterministic, x,
                                      [(tap_layers, (shape, shape))], bias, mask)
        else:
            taps = {}
            for i in range(cfg.num_encoder_layers):
                x, tap = layer_cls(cfg, name=f"layers_{i}")(x, bias, mask, deterministic)
                if i in tap_layers:
                    taps[tap_layers[i]] = tap
        x = RMSNorm(cfg, name="encoder_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic), taps


class Decoder(_Stack):
    """The decoder stack: embedding, `num_decoder_layers` `DecoderLayer`s, final norm and output head.

    One causal `RelativePositionBias` (`relpos_bias`) is shared by all layers. The head is the tied
    embedding (`embedder.attend`, after scaling by `d_model ** -0.5` when `scale_decoder_outputs`) or an
    untied `logits_dense` kernel `[d_model, vocab]` inside this module's parameters.
    """

    @nn.compact
    def __call__(self, encoded, encoder_tokens, decoder_input_tokens, decoder_target_tokens=None,
                 encoder_segment_ids=None, decoder_segment_ids=None, *, deterministic: bool,
                 decode: bool = False, decode_position=None, max_decode_length=None,
                 self_tap_layers: Mapping[int, int] = {}, cross_tap_layers: Mapping[int, int] = {}):
        """Decodes a batch teacher-forced, or one cached step with `decode`.

        Args:
          encoded: `[batch, enc_len, d_model]`, the encoder output.
          encoder_tokens: int `[batch, enc_len]`, 0 = padding (for the cross-attention mask).
          decoder_input_tokens: int `[batch, dec_len]`; `[batch, 1]` with `decode`.
          decoder_target_tokens: optional int `[batch, dec_len]`; its padding is masked as keys.
          encoder_segment_ids, decoder_segment_ids: optional int packed-example ids.
          deterministic: no dropout when True.
          decode: one token at `decode_position` against the `cache` collection.
          decode_position: int32 scalar (with `decode`).
          max_decode_length: static cache length (with `decode`).
          self_tap_layers, cross_tap_layers: {absolute layer index: key in the returned taps}.

        Returns:
          (float32 logits `[batch, dec_len, vocab]`, {key: self-attention AttentionTap},
          {key: cross-attention AttentionTap}).

        Raises:
          ValueError: `decode` with `config.scan_layers` (decoding needs the unrolled layout).
        """
        cfg = self.config
        x = self._embed(decoder_input_tokens, deterministic)
        relpos = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")
        if decode:
            # One new token at `decode_position` against the cache of `max_decode_length` keys.
            bias = relpos(1, max_decode_length, decode_position)
            self_mask = (jnp.arange(max_decode_length) <= decode_position)[None, None, None, :]
        else:
            length = decoder_input_tokens.shape[1]
            bias = relpos(length, length)
            self_mask = decoder_attention_mask(decoder_input_tokens, decoder_target_tokens, decoder_segment_ids)
        cross_mask = cross_attention_mask(encoder_tokens, decoder_segment_ids, encoder_segment_ids)
        layer_cls = DecoderLayer if decode else remat_layer(DecoderLayer, cfg, static_argnums=(6,))
        if cfg.scan_layers:
            if decode:
                raise ValueError("decode=True needs the unrolled layout: decode with "
                                 "`T5(config.replace(scan_layers=False))` and `unstack_layers(params)`.")
            self_shape = decoder_input_tokens.shape + (cfg.inner_dim,)
            cross_shape = (self_shape, encoder_tokens.shape + (cfg.inner_dim,))
            x, (self_taps, cross_taps) = scan_layers(
                layer_cls, cfg, cfg.num_decoder_layers, deterministic, x,
                [(self_tap_layers, (self_shape, self_shape)), (cross_tap_layers, cross_shape)],
                encoded, bias, self_mask, cross_mask)
            return self._head(x, deterministic), self_taps, cross_taps
        self_taps, cross_taps = {}, {}
        for i in range(cfg.num_decoder_layers):
            if decode:
                x, self_tap, cross_tap = layer_cls(cfg, name=f"layers_{i}")(
                    x, encoded, bias, self_mask, cross_mask, deterministic, decode, decode_position,
                    max_decode_length)
            else:
                x, self_tap, cross_tap = layer_cls(cfg, name=f"layers_{i}")(
                    x, encoded, bias, self_mask, cross_mask, deterministic)
            if i in self_tap_layers:
                self_taps[self_tap_layers[i]] = self_tap
            if i in cross_tap_layers:
                cross_taps[cross_tap_layers[i]] = cross_tap
        return self._head(x, deterministic), self_taps, cross_taps

    def _head(self, x, deterministic: bool) -> jax.Array:
        """Final norm and output projection: float32 logits `[batch, length, vocab]`."""
        cfg = self.config
        x = RMSNorm(cfg, name="decoder_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        if cfg.scale_decoder_outputs:  # T5 v1.0: rescale before the tied head
            x = x * (cfg.d_model ** -0.5)
        if cfg.tie_word_embeddings:
            logits = self.embedder.attend(x.astype(cfg.compute_dtype))
        else:
            # std d_model^-0.5 (Mesh TF / t5x) keeps initial logits O(1); HF's std 1.0 starts near CE 60.
            logits = Dense(cfg.vocab_size, ("embed", "vocab"), cfg.d_model ** -0.5, cfg, name="logits_dense")(x)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class T5(EncoderDecoder):
    """T5 encoder-decoder, the `models/interface.py` seam's implementation for the T5 family.

    Parameters: `token_embedder` (`embedding` `[vocab, d_model]`), `encoder`, `decoder`; their HF names
    are in `checkpoints/hf.py`. Apply with `{"params": params}`; dropout needs a `dropout` rng, and
    one-token decoding a mutable `cache` collection.
    """

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=_param_init(1.0, ("vocab", "embed")), name="token_embedder")
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, *, enable_dropout: bool = False,
               taps: Taps = Taps()):
        """Encoder pass (use with `apply(..., method=T5.encode)`).

        Args:
          encoder_input_tokens: int `[batch, enc_len]`, 0 = padding.
          encoder_segment_ids: optional int `[batch, enc_len]`, packed-example ids.
          enable_dropout: apply dropout (needs a `dropout` rng).
          taps: only `taps.encoder_self` is used here.

        Returns:
          (encoded `[batch, enc_len, d_model]` in the compute dtype, {layer as requested: AttentionTap}).

        Raises:
          ValueError: a tap outside the stack.
        """
        layers = taps.resolve(self.config)["encoder_self"]
        return self.encoder(encoder_input_tokens, encoder_segment_ids, deterministic=not enable_dropout,
                            tap_layers=layers)

    def decode(self, encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
               encoder_segment_ids=None, decoder_segment_ids=None, *, enable_dropout: bool = False,
               decode: bool = False, decode_position=None, max_decode_length: int | None = None,
               taps: Taps = Taps()):
        """Decoder pass (use with `apply(..., method=T5.decode)`).

        With `decode=True` (mutable `cache`), `decoder_input_tokens` is `[batch, 1]`: the token at
        `decode_position` of a sequence at most `max_decode_length` long.

        Args:
          encoded: `[batch, enc_len, d_model]` from `encode`.
          encoder_input_tokens: int `[batch, enc_len]`, 0 = padding.
          decoder_input_tokens: int `[batch, dec_len]`, or `[batch, 1]` with `decode`.
          decoder_target_tokens, encoder_segment_ids, decoder_segment_ids: as in `__call__`.
          enable_dropout: apply dropout (needs a `dropout` rng).
          decode, decode_position, max_decode_length: a one-token cached step.
          taps: `taps.decoder_self` and `taps.cross` are used here.

        Returns:
          (float32 logits `[batch, dec_len, vocab]`, {layer: decoder self AttentionTap},
          {layer: cross AttentionTap}).

        Raises:
          ValueError: `decode` without `decode_position` or `max_decode_length`, `decode` with
            `config.scan_layers`, or a tap outside the stack.
        """
        if decode and (decode_position is None or max_decode_length is None):
            raise ValueError("decode=True needs decode_position and max_decode_length.")
        resolved = taps.resolve(self.config)
        return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                            encoder_segment_ids, decoder_segment_ids, deterministic=not enable_dropout,
                            decode=decode, decode_position=decode_position,
                            max_decode_length=max_decode_length,
                            self_tap_layers=resolved["decoder_self"], cross_tap_layers=resolved["cross"])



def attention_logits_terms(config: T5Config, params, kind: str, query_length: int, key_length: int):
    """What T5 adds to the taps' `q . k` to get its attention scores, for tools that recompute attention.

    Args:
      config: the model config; params: unboxed unrolled parameters (numpy or JAX).
      kind: one of `ATTENTION_KINDS`; query_length, key_length: static lengths in tokens.

    Returns:
      (scale, bias): scores are `scale * q . k + bias`; T5: scale 1, bias the stack's relative-position
      bias as float64 `[1, heads, query_length, key_length]` (0.0 for cross-attention).
    """
    if kind == "cross":
        return 1.0, 0.0
    stack = "encoder" if kind == "encoder_self" else "decoder"
    buckets = relative_position_bucket(np.arange(key_length)[None] - np.arange(query_length)[:, None],
                                       kind == "encoder_self", config.relative_attention_num_buckets,
                                       config.relative_attention_max_distance)
    table = np.asarray(params[stack]["relpos_bias"]["rel_embedding"], np.float64)
    return 1.0, table[buckets].transpose(2, 0, 1)[None]
