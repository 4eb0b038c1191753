"""Flax T5 models, their named shapes, and the model interface the training and distillation code use.

Importing this package does not import TensorFlow.
"""

from miniend_jax.models.config import T5Config
from miniend_jax.models.interface import ATTENTION_KINDS, MODEL_INPUTS, AttentionTap, Seq2SeqOutput, Taps
from miniend_jax.models.presets import get_preset, preset_names
from miniend_jax.models.t5 import T5, abstract_params, init_params

__all__ = ["T5", "T5Config", "Seq2SeqOutput", "AttentionTap", "Taps", "ATTENTION_KINDS", "MODEL_INPUTS",
           "get_preset", "preset_names", "init_params", "abstract_params"]
