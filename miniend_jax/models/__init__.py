"""Flax T5 models and their named shapes. Importing this package does not import TensorFlow."""

from miniend_jax.models.config import T5Config
from miniend_jax.models.presets import get_preset, preset_names
from miniend_jax.models.t5 import T5, AttentionTap, T5Output, Taps, abstract_params, init_params

__all__ = ["T5", "T5Config", "T5Output", "AttentionTap", "Taps", "get_preset", "preset_names",
           "init_params", "abstract_params"]
