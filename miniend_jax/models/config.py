"""The T5 architecture configuration shared by teacher and student."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from miniend_jax.errors import ConfigError

# Activation names as HF `transformers` spells them: gated-gelu uses the tanh approximation ("gelu_new").
_ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu")
# full: keep only layer inputs, recompute the rest; dots: keep matmul outputs, recompute elementwise ops.
REMAT_POLICIES = ("none", "full", "dots")


def validate_execution(config) -> None:
    """The fields every family's config shares: `dtype`, `param_dtype`, `remat` and `scan_layers`.

    Raises:
      ConfigError: naming the field, its value and what is allowed.
    """
    for name, allowed in (("dtype", ("float32", "bfloat16")), ("param_dtype", ("float32", "bfloat16", "float16"))):
        value = getattr(config, name)
        if value not in allowed:
            raise ConfigError(f"model.{name}={value!r}: expected one of {', '.join(map(repr, allowed))}.")
    if config.remat not in REMAT_POLICIES:
        raise ConfigError(f"model.remat={config.remat!r}: use one of {', '.join(REMAT_POLICIES)}.")
    if not isinstance(config.scan_layers, bool):
        raise ConfigError(f"model.scan_layers={config.scan_layers!r}: must be True or False.")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Shape and numerics of a T5-family encoder-decoder.

    T5 v1.0 is `feed_forward_proj="relu"` with tied embeddings and the decoder output scaled by
    `d_model ** -0.5` before the tied head; v1.1, Flan-T5 and mT5 are `"gated-gelu"`, untied, unscaled.
    `dtype` is the compute dtype of activations and matmuls (float32 or bfloat16; float16 is refused
    because T5's activations overflow it); `param_dtype` the dtype parameters are created in (float16
    storage is allowed: parameters are cast to `dtype` before use). Softmax, layer-norm statistics and
    the returned logits are float32 regardless. Both are stored as names (strings, as in config files);
    `compute_dtype` is `dtype` as a `jnp.dtype`, and `jnp.dtype(config.param_dtype)` the parameters' one.

    Raises:
      ConfigError: on construction (`validate`), for any out-of-range or inconsistent field.
    """

    family: ClassVar[str] = "t5"

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    scale_decoder_outputs: bool = True
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dropout_rate: float = 0.1
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"          # none | full | dots: rematerialise each layer in the backward pass
    scan_layers: bool = False    # one `nn.scan` per stack: parameters stacked as `layers` [depth, ...]

    def __post_init__(self):
        self.validate()

    # -- derived -------------------------------------------------------------------------------
    @property
    def inner_dim(self) -> int:
        """Width of the attention projections, `num_heads * d_kv` (need not equal d_model)."""
        return self.num_heads * self.d_kv

    @property
    def is_gated(self) -> bool:
        """Whether the FFN is gated (`gated-*`: two input projections `wi_0`, `wi_1`)."""
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        """HF's name of the FFN activation (`gated-gelu` means the tanh-approximate `gelu_new`)."""
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    @property
    def compute_dtype(self) -> jnp.dtype:
        """`dtype` as a `jnp.dtype`."""
        return jnp.dtype(self.dtype)

    def replace(self, **changes) -> "T5Config":
        """A copy with `changes` applied (validated again).

        Raises:
          ConfigError: the result is invalid.
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every field by name, JSON-serialisable (dtypes as strings)."""
        return dataclasses.asdict(self)

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Checks every field; called by `__post_init__`.

        Raises:
          ConfigError: naming the field, its value and what is allowed.
        """
        positive = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_encoder_layers",
                    "num_decoder_layers", "relative_attention_num_buckets",
                    "relative_attention_max_distance")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model.{name}={value!r}: must be a positive integer.")
        parts = self.feed_forward_proj.split("-")
        if (len(parts) == 2 and parts[0] != "gated") or len(parts) > 2 or self.activation not in _ACTIVATIONS:
            raise ConfigError(
                f"model.feed_forward_proj={self.feed_forward_proj!r}: expected 'relu', 'gelu', "
                "'gated-gelu', 'gated-relu' or 'gated-silu'.")
        if self.relative_attention_num_buckets < 4:
            raise ConfigError("model.relative_attention_num_buckets must be at least 4 (T5 uses 32).")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"model.dropout_rate={self.dropout_rate!r}: must be in [0, 1).")
        if self.dtype == "float16":
            # T5's activations exceed float16's range (6.5e4) in trained models (v1.1 feed-forward outputs
            # reach about 1e5), which gives inf and then NaN; bfloat16 has float32's range.
            raise ConfigError("model.dtype='float16': T5 activations overflow float16 (its largest value is "
                              "65504); compute in 'bfloat16' (or 'float32').")
        validate_execution(self)
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"model.{name}={value} lies outside the vocabulary "
                                  f"(vocab_size={self.vocab_size}).")
