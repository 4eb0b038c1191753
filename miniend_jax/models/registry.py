"""The model families, by name: the one place that maps a family to its config, module and shapes.

A family is an encoder-decoder that implements the seam of `models/interface.py` (and its decoding
contract: `encode`, `decode` with a `cache` collection, the unrolled layout). Everything outside `models/`
asks this module; nothing there names T5 or BART. Checkpoints record `family` (`config.family`); HF
checkpoints are read and written by the family's module in `checkpoints/` (`checkpoints/hf.py` keeps that
table, keyed by the same names).

To add a family: a config dataclass with a `family` class attribute and the fields the seam reads
(`num_encoder_layers`, `num_decoder_layers`, `inner_dim`, `vocab_size`, `pad_token_id`, `eos_token_id`,
`decoder_start_token_id`, `dtype`, `param_dtype`, `remat`, `scan_layers`, `replace`, `to_dict`), a Flax
module, its presets and FLOP count, and one `Family` row below; then its HF module in `checkpoints/`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from miniend_jax.errors import ConfigError
from miniend_jax.models.bart import Bart, attention_logits_terms as bart_attention_terms
from miniend_jax.models.bart_config import PRESETS as BART_PRESETS, BartConfig
from miniend_jax.models.common import stack_layers, to_layout, unstack_layers
from miniend_jax.models.config import T5Config
from miniend_jax.models.flops import bart_forward_flops, t5_forward_flops
from miniend_jax.models.presets import PRESETS as T5_PRESETS
from miniend_jax.models.t5 import T5, attention_logits_terms as t5_attention_terms


@dataclasses.dataclass(frozen=True)
class Family:
    """One encoder-decoder family.

    Attributes:
      name: recorded in checkpoints (`meta["family"]`) and equal to `config_cls.family`.
      config_cls: the frozen config dataclass.
      module: the Flax module class, built as `module(config)`.
      presets: {preset name: config fields}; names are unique across families.
      forward_flops: `(config, batch, encoder_length, decoder_length) -> FLOPs` of one forward pass.
      copy_fields: config fields that must be equal for a student to copy a teacher's layers.
      attention_logits_terms: `(config, params, kind, query_length, key_length) -> (scale, bias)`: the
        attention scores are `scale * q . k + bias` of a layer's tap (for tools that recompute attention).
      generation_defaults: `config -> {HF GenerationConfig name: value}`, the decoding settings of the
        family's models where no checkpoint file sets them (pipeline ids).
    """

    name: str
    config_cls: type
    module: type
    presets: Mapping[str, dict]
    forward_flops: Callable[..., float]
    copy_fields: tuple[str, ...]
    attention_logits_terms: Callable[..., tuple[Any, Any]]
    generation_defaults: Callable[[Any], dict] = lambda config: {}


def _bart_generation(config: BartConfig) -> dict:
    """facebook/bart-large's config.json: 3-gram blocking, forced EOS, and forced BOS where the model has one
    of its own (a BART student given T5's ids has none: its `bos_token_id` is the pad id)."""
    rules = {"no_repeat_ngram_size": 3, "forced_eos_token_id": config.eos_token_id}
    if config.bos_token_id != config.pad_token_id:
        rules["forced_bos_token_id"] = config.bos_token_id
    return rules


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("t5", T5Config, T5, T5_PRESETS, t5_forward_flops,
           ("d_model", "num_heads", "d_kv", "d_ff", "vocab_size", "feed_forward_proj", "tie_word_embeddings"), t5_attention_terms),
    Family("bart", BartConfig, Bart, BART_PRESETS, bart_forward_flops,
           ("d_model", "num_heads", "d_ff", "vocab_size", "max_position_embeddings", "activation_function",
            "scale_embedding"), bart_attention_terms,
           _bart_generation),
)}
DEFAULT_FAMILY = "t5"   # what checkpoints written before the family was recorded hold


def get_family(name: str, where: str = "model.family") -> Family:
    """The family called `name`.

    Raises:
      ConfigError: no such family, naming `where` and the families there are.
    """
    if name not in FAMILIES:
        raise ConfigError(f"{where}={name!r}: this version builds the families {', '.join(sorted(FAMILIES))}.")
    return FAMILIES[name]


def family_of(config) -> Family:
    """The family of a config object (its `family` class attribute)."""
    return get_family(type(config).family)


def preset_names() -> list[str]:
    """Every preset of every family, sorted."""
    return sorted(name for family in FAMILIES.values() for name in family.presets)


def get_preset(name: str, **overrides):
    """The named shape as its family's config, with `overrides` applied.

    Raises:
      ConfigError: `name` is no preset, or the overrides make an invalid config (an unknown field is named).
    """
    for family in FAMILIES.values():
        if name in family.presets:
            return make_config(family.name, {**family.presets[name], **overrides},
                               f"preset {name!r} with its overrides ({', '.join(sorted(overrides)) or 'none'})")
    raise ConfigError(f"unknown model preset {name!r}; choose one of: {', '.join(preset_names())}.")


def make_config(family: str, fields: Mapping[str, Any], where: str = "model"):
    """`config_cls(**fields)` of `family`, with an unknown field named rather than a TypeError.

    Raises:
      ConfigError: an unknown family or field, or an invalid value.
    """
    cls = get_family(family).config_cls
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"{where}: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a field of a "
                          f"{family} model config; its fields are {', '.join(sorted(known))}.")
    return cls(**fields)


def module(config) -> nn.Module:
    """The Flax module of `config` (`T5(config)`, `Bart(config)`, ...)."""
    return family_of(config).module(config)


def init_params(config, rng: jax.Array, batch: int = 1, length: int = 8):
    """Random parameters of `config`'s model (each family's initialisation), boxed with logical axis names.

    Args:
      config: any family's config; the layout follows `config.scan_layers`.
      rng: a `jax.random` key.
      batch, length: shape of the dummy tokens traced for initialisation (no effect on the result).
    """
    tokens = jnp.ones((batch, length), jnp.int32)
    return module(config).init(rng, tokens, tokens)["params"]


def abstract_params(config):
    """`init_params`'s tree as boxed `ShapeDtypeStruct`s, allocating nothing."""
    return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def forward_flops(config, batch: int, encoder_length: int, decoder_length: int) -> float:
    """Matmul FLOPs of one teacher-forced forward pass over a padded batch (see `models/flops.py`)."""
    return family_of(config).forward_flops(config, batch, encoder_length, decoder_length)


def decoding_model(config):
    """`(module, to_params)` for cached decoding: the unrolled layout's module and a function taking
    parameters of `config`'s layout to it (decoding keeps a key/value cache per layer)."""
    if not config.scan_layers:
        return module(config), lambda params: params
    return module(config.replace(scan_layers=False)), unstack_layers


__all__ = ["Family", "FAMILIES", "DEFAULT_FAMILY", "get_family", "family_of", "preset_names", "get_preset",
           "make_config", "module", "init_params", "abstract_params", "forward_flops", "decoding_model",
           "stack_layers", "unstack_layers", "to_layout"]
