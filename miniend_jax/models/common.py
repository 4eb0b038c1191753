"""Pieces every model family shares: the finite mask value, per-layer rematerialisation, the layer scan
with taps carried through it, and the two parameter layouts (unrolled `layers_<i>`, scanned `layers`).

A family's stacks are `encoder` and `decoder`, each holding its layers as `layers_<i>` (unrolled) or one
`layers` tree with a leading depth axis (scanned, `config.scan_layers`); its config has `remat`,
`scan_layers` and `compute_dtype`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from miniend_jax.models.interface import AttentionTap, Seq2SeqOutput, Taps

# Finite "minus infinity": a fully masked row (padding in a packed batch) becomes uniform, not NaN.
MASK_VALUE = -1e10


def cache_keys_values(module: nn.Module, k: jax.Array, v: jax.Array, *, decode: bool, is_cross: bool,
                      decode_position=None, max_decode_length: int | None = None) -> tuple[jax.Array, jax.Array]:
    """The keys and values one attention module attends to, through its `cache` collection when decoding.

    Cross-attention stores its projections of the encoder output once (`cross_key`, `cross_value`; the
    module reads them back before projecting again); self-attention writes this step's key and value into
    buffers of `max_decode_length` at `decode_position` and attends to the buffers.

    Args:
      module: the attention module (its `cache` variables are created in its scope).
      k, v: this call's projections `[batch, length, width]`.
      decode, is_cross: a one-token decoding step; cross-attention.
      decode_position: int32 scalar (self-attention with `decode`).
      max_decode_length: static buffer length (self-attention with `decode`).

    Returns:
      (keys, values): `k`, `v` themselves unless decoding self-attention, then the buffers
      `[batch, max_decode_length, width]`.
    """
    if decode and is_cross:
        module.put_variable("cache", "cross_key", k)
        module.put_variable("cache", "cross_value", v)
    elif decode:
        shape = (k.shape[0], max_decode_length, k.shape[-1])
        cached_key = module.variable("cache", "cached_key", jnp.zeros, shape, k.dtype)
        cached_value = module.variable("cache", "cached_value", jnp.zeros, shape, v.dtype)
        cached_key.value = jax.lax.dynamic_update_slice_in_dim(cached_key.value, k, decode_position, 1)
        cached_value.value = jax.lax.dynamic_update_slice_in_dim(cached_value.value, v, decode_position, 1)
        return cached_key.value, cached_value.value
    return k, v


class EncoderDecoder(nn.Module):
    """The teacher-forced forward pass every family shares, from its own `encode` and `decode`."""

    def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
                 encoder_segment_ids=None, decoder_segment_ids=None, *, enable_dropout: bool = False,
                 taps: Taps = Taps()) -> Seq2SeqOutput:
        """Teacher-forced forward pass.

        Args:
          encoder_input_tokens: int `[batch, enc_len]`, 0 = padding.
          decoder_input_tokens: int `[batch, dec_len]`, the targets shifted right (start token 0).
          decoder_target_tokens: optional int `[batch, dec_len]`; where given, its padding is masked.
          encoder_segment_ids, decoder_segment_ids: optional int, packed-example ids (0 = padding).
          enable_dropout: apply dropout (needs a `dropout` rng).
          taps: layers whose attention Q/K/V to return.

        Returns:
          `Seq2SeqOutput`: float32 logits `[batch, dec_len, vocab]` and the requested taps.

        Raises:
          ValueError: a tap outside its stack.
        """
        encoded, encoder_taps = self.encode(encoder_input_tokens, encoder_segment_ids,
                                            enable_dropout=enable_dropout, taps=taps)
        logits, self_taps, cross_taps = self.decode(
            encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
            encoder_segment_ids, decoder_segment_ids, enable_dropout=enable_dropout, taps=taps)
        return Seq2SeqOutput(logits, {"encoder_self": encoder_taps, "decoder_self": self_taps, "cross": cross_taps})


def remat_layer(layer_cls, config, static_argnums: tuple[int, ...]):
    """The layer class wrapped for rematerialisation per `config.remat` (none, full, dots) (argnums count `self` as 0)."""
    if config.remat == "none":
        return layer_cls
    policy = {"full": None, "dots": jax.checkpoint_policies.checkpoint_dots}[config.remat]
    return nn.remat(layer_cls, policy=policy, static_argnums=static_argnums, prevent_cse=True)


class _ScanStep(nn.Module):
    """One iteration of a layer scan. The carry is (activations, layer index, captured taps); the taps
    of the layers in `captures` are kept in the carry, so nothing else leaves the loop.

    `captures` holds, for each tap the layer returns, the `(layer, slot)` pairs to keep. The layer's
    parameters live in this module's scope (`share_scope`), so a scanned stack's parameters are
    `layers/<the layer's own names>`, each with a leading depth axis.
    """

    config: Any
    layer_cls: type
    captures: tuple[tuple[tuple[int, int], ...], ...]
    deterministic: bool

    def setup(self):
        self.layer = self.layer_cls(self.config)
        nn.share_scope(self, self.layer)

    def __call__(self, carry, *args):
        x, index, captured = carry
        x, *taps = self.layer(x, *args, self.deterministic)
        keep = lambda layer, new, old: jax.tree.map(lambda n, o: jnp.where(index == layer, n, o), new, old)
        captured = tuple({slot: keep(layer, tap, kept[slot]) for layer, slot in pairs}
                         for tap, pairs, kept in zip(taps, self.captures, captured))
        return (x, index + 1, captured), None


def scan_layers(layer_cls, config, depth: int, deterministic: bool, x, tap_specs, *broadcast):
    """Runs `depth` layers as one `nn.scan` named `layers`. `tap_specs` gives, per tap the layer returns,
    ({layer: slot}, (q shape, k/v shape)); returns (x, one {slot: AttentionTap} per tap)."""
    dtype = config.compute_dtype
    captures = tuple(tuple(sorted(layers.items())) for layers, _ in tap_specs)
    initial = tuple({slot: AttentionTap(jnp.zeros(q_shape, dtype), jnp.zeros(kv_shape, dtype),
                                        jnp.zeros(kv_shape, dtype)) for slot in layers.values()}
                    for layers, (q_shape, kv_shape) in tap_specs)
    scan = nn.scan(_ScanStep, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                   in_axes=nn.broadcast, length=depth, metadata_params={nn.PARTITION_NAME: "layers"})
    (x, _, captured), _ = scan(config, layer_cls, captures, deterministic, name="layers")(
        (x, jnp.int32(0), initial), *broadcast)
    return x, captured


# ---------------------------------------------------------------------------------------------
# Parameter layouts: unrolled (`layers_0`, `layers_1`, ...) and scanned (`layers`, stacked)
# ---------------------------------------------------------------------------------------------
_STACKS = ("encoder", "decoder")


def is_scanned(params) -> bool:
    """Whether (unboxed) parameters are in the scanned layout (`encoder/layers` rather than `layers_<i>`)."""
    return "layers" in params["encoder"]


def stack_layers(params):
    """Unrolled -> scanned: each stack's `layers_<i>` become one `layers` tree with a leading depth axis.

    Works on numpy or JAX arrays (stacking JAX arrays is traceable, e.g. inside `jit`).

    Args:
      params: unboxed parameters of any family, either layout (scanned ones are returned unchanged).

    Returns:
      A new top-level dict (leaves not copied) whose `encoder` and `decoder` hold `layers`, every leaf
      `[depth, *shape of one layer's leaf]`, in the leaves' dtype.
    """
    if is_scanned(params):
        return params
    out = dict(params)
    for stack in _STACKS:
        tree = dict(params[stack])
        depth = sum(1 for name in tree if name.startswith("layers_"))
        layers = [tree.pop(f"layers_{i}") for i in range(depth)]
        tree["layers"] = jax.tree.map(lambda *xs: (jnp if isinstance(xs[0], jax.Array) else np).stack(xs), *layers)
        out[stack] = tree
    return out


def unstack_layers(params):
    """Scanned -> unrolled, the layout of HF checkpoints, student initialisation and decoding.

    Args:
      params: unboxed parameters of any family, either layout (unrolled ones are returned unchanged).

    Returns:
      A new top-level dict whose stacks hold `layers_0` ... `layers_<depth-1>`, each a slice of the
      stacked leaves along their leading axis.
    """
    if not is_scanned(params):
        return params
    out = dict(params)
    for stack in _STACKS:
        tree = dict(params[stack])
        layers = tree.pop("layers")
        depth = jax.tree.leaves(layers)[0].shape[0]
        tree.update({f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], layers) for i in range(depth)})
        out[stack] = tree
    return out


def to_layout(params, config):
    """(Unboxed) parameters in the layout `config.scan_layers` asks for, whichever they are in.

    `stack_layers` when `config.scan_layers`, else `unstack_layers`.
    """
    return stack_layers(params) if config.scan_layers else unstack_layers(params)
