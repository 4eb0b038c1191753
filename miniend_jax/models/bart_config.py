"""The BART architecture configuration, and BART's named shapes.

BART (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language
Generation, Translation, and Comprehension") as HF `transformers` `BartForConditionalGeneration` builds it:
learned absolute positions (table offset 2), `layernorm_embedding`, post-layer-norm blocks, GELU,
optional `scale_embedding`, a tied head plus `final_logits_bias`.

Token ids: the pipeline and every mask here take id 0 as padding (`models/interface.py`). BART's own
vocabulary has `<s>`=0 and `<pad>`=1, so the ids this model sees are BART's with 0 and `hf_pad_token_id`
swapped (`checkpoints/bpe.py` `hf_to_pipeline`; the HF reader and writer swap the embedding rows the same
way). With BART's vocabulary: pad 0, `<s>` 1, `</s>` 2.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from miniend_jax.errors import ConfigError
from miniend_jax.models.config import validate_execution

_ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu")


@dataclasses.dataclass(frozen=True)
class BartConfig:
    """Shape and numerics of a BART encoder-decoder (`model_type="bart"`).

    Encoder and decoder share `d_model`, `num_heads` and `d_ff` (every published BART does; HF's separate
    `encoder_*`/`decoder_*` fields must be equal to be read). `dtype`/`param_dtype` as in `T5Config`;
    softmax, layer-norm statistics and the logits are float32. Ids are pipeline ids (module docstring).

    Raises:
      ConfigError: on construction (`validate`), for any out-of-range or inconsistent field.
    """

    family: ClassVar[str] = "bart"

    vocab_size: int = 50265
    d_model: int = 768
    d_ff: int = 3072
    num_heads: int = 12
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    max_position_embeddings: int = 1024
    activation_function: str = "gelu"    # HF's name; "gelu" is the exact (erf) GELU
    scale_embedding: bool = False        # multiply token embeddings by sqrt(d_model)
    layer_norm_epsilon: float = 1e-5
    dropout_rate: float = 0.1            # residual and embedding dropout (HF `dropout`)
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    pad_token_id: int = 0                # pipeline ids (see the module docstring)
    bos_token_id: int = 1
    eos_token_id: int = 2
    decoder_start_token_id: int = 2
    hf_pad_token_id: int = 1             # the pad id of the HF vocabulary, swapped with 0 on import/export
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = False

    def __post_init__(self):
        self.validate()

    @property
    def d_kv(self) -> int:
        """Width of one head, `d_model // num_heads`."""
        return self.d_model // self.num_heads

    @property
    def inner_dim(self) -> int:
        """Width of the attention projections (`d_model` in BART)."""
        return self.d_model

    @property
    def compute_dtype(self) -> jnp.dtype:
        """`dtype` as a `jnp.dtype`."""
        return jnp.dtype(self.dtype)

    def replace(self, **changes) -> "BartConfig":
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every field by name, JSON-serialisable."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Checks every field.

        Raises:
          ConfigError: naming the field, its value and what is allowed.
        """
        for name in ("vocab_size", "d_model", "d_ff", "num_heads", "num_encoder_layers", "num_decoder_layers",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model.{name}={value!r}: must be a positive integer.")
        if self.d_model % self.num_heads:
            raise ConfigError(f"model.d_model={self.d_model} is not a multiple of model.num_heads={self.num_heads}; "
                              "BART splits d_model evenly over its heads.")
        if self.activation_function not in _ACTIVATIONS:
            raise ConfigError(f"model.activation_function={self.activation_function!r}: use one of "
                              f"{', '.join(_ACTIVATIONS)}.")
        for name in ("dropout_rate", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name}={getattr(self, name)!r}: must be in [0, 1).")
        validate_execution(self)
        if self.pad_token_id != 0:
            raise ConfigError(f"model.pad_token_id={self.pad_token_id}: the pipeline's padding id is 0; BART's own "
                              "pad id belongs in model.hf_pad_token_id (ids are swapped on import).")
        for name in ("bos_token_id", "eos_token_id", "decoder_start_token_id", "hf_pad_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"model.{name}={value} lies outside the vocabulary (vocab_size={self.vocab_size}).")


# BART's published shapes (config.json of facebook/bart-base and bart-large; bart-large-cnn and -xsum are
# bart-large), and students shaped as distilbart's (teacher widths, fewer layers) or the paper's 6L;384H.
_BASE = dict(d_model=768, d_ff=3072, num_heads=12)
_LARGE = dict(d_model=1024, d_ff=4096, num_heads=16)
PRESETS: dict[str, dict] = {
    "bart-base": dict(_BASE, num_encoder_layers=6, num_decoder_layers=6),
    "bart-large": dict(_LARGE, num_encoder_layers=12, num_decoder_layers=12),
    "distilbart-12-6": dict(_LARGE, num_encoder_layers=12, num_decoder_layers=6),
    "distilbart-12-3": dict(_LARGE, num_encoder_layers=12, num_decoder_layers=3),
    "distilbart-6-6": dict(_LARGE, num_encoder_layers=6, num_decoder_layers=6),
    "bart-base-3-3": dict(_BASE, num_encoder_layers=3, num_decoder_layers=3),
    # The paper's "6L;384H" student shape in BART's form: 6+6 layers, width 384, 6 heads of 64, FFN 1536.
    "bart-6l-384h": dict(d_model=384, d_ff=1536, num_heads=6, num_encoder_layers=6, num_decoder_layers=6),
}
