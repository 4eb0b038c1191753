"""The encoder-decoder families (T5, BART), their named shapes, and the model interface the training and
distillation code use. Code outside `models/` reaches a family through `models.registry` only.

Importing this package does not import TensorFlow.
"""

from miniend_jax.models.bart import Bart
from miniend_jax.models.bart_config import BartConfig
from miniend_jax.models.config import T5Config
from miniend_jax.models.interface import ATTENTION_KINDS, MODEL_INPUTS, AttentionTap, Seq2SeqOutput, Taps
from miniend_jax.models.registry import (FAMILIES, abstract_params, family_of, get_family, get_preset, init_params,
                                         module, preset_names)
from miniend_jax.models.t5 import T5

__all__ = ["T5", "T5Config", "Bart", "BartConfig", "Seq2SeqOutput", "AttentionTap", "Taps", "ATTENTION_KINDS", "MODEL_INPUTS", "FAMILIES", "family_of",
           "get_family", "get_preset", "preset_names", "module", "init_params", "abstract_params"]
