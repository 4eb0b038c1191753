"""Preset shapes: parameter counts equal PyTorch `transformers` (T5, BART) built from the same configuration."""

import jax
import numpy as np
import pytest
import torch
import transformers

from miniend_jax.checkpoints.hf import config_to_hf
from miniend_jax.errors import ConfigError
from miniend_jax.models import abstract_params, get_preset, init_params, preset_names

# Small and base shapes are instantiated for real; larger ones are built on torch's meta device,
# which records shapes without allocating.
REAL = ["t5-small", "t5-v1_1-small", "flan-t5-small", "miniend-6l-384h", "miniend-6l-384h-gated", "bart-6l-384h"]
META = sorted(set(preset_names()) - set(REAL))


def _hf_count(name: str, device: str) -> int:
    config = get_preset(name)
    fields = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "dtype")}
    hf_config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device(device):
        model = transformers.AutoModelForSeq2SeqLM.from_config(hf_config)
        if not getattr(config, "tie_word_embeddings", True):  # transformers 5 ties on construction; v1.1 is untied
            model.lm_head.weight = torch.nn.Parameter(torch.empty(config.vocab_size, config.d_model))
    # BART's `final_logits_bias` is a buffer in transformers and a (constant) parameter here.
    buffers = sum(b.numel() for n, b in model.named_buffers() if n == "final_logits_bias")
    return sum(p.numel() for p in model.parameters()) + buffers


def _our_count(name: str) -> int:
    shapes = abstract_params(get_preset(name))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize("name", REAL)
def test_parameter_count_small_shapes(name):
    assert _our_count(name) == _hf_count(name, "cpu")


@pytest.mark.parametrize("name", META)
def test_parameter_count_large_shapes_without_allocating(name):
    assert _our_count(name) == _hf_count(name, "meta")


def test_published_counts():
    """Counts the model cards give for well-known checkpoints."""
    assert _our_count("t5-small") == 60_506_624
    assert _our_count("t5-base") == 222_903_552
    assert _our_count("t5-v1_1-xl") == 2_849_757_184
    # facebook/bart-base and bart-large: 139,420,416 and 406,291,456 parameters, plus the 50,265-entry
    # final_logits_bias buffer.
    assert _our_count("bart-base") == 139_420_416 + 50_265
    assert _our_count("bart-large") == 406_291_456 + 50_265


def test_student_is_about_an_eighth_of_t5_base_flops():
    """Layer matmul FLOPs at 128+128 tokens: the paper's student is 1/8 of T5-base.

    The 1/8 holds for the transformer layers (0.125); counting the vocabulary projection too gives 0.167.
    """
    def flops(config, length=128):
        enc = config.num_encoder_layers * (4 * config.d_model * config.inner_dim
                                           + (3 if config.is_gated else 2) * config.d_model * config.d_ff)
        dec = config.num_decoder_layers * (8 * config.d_model * config.inner_dim
                                           + (3 if config.is_gated else 2) * config.d_model * config.d_ff)
        return 2 * length * (enc + dec)
    ratio = flops(get_preset("miniend-6l-384h")) / flops(get_preset("t5-base"))
    assert abs(ratio - 1 / 8) < 0.005, ratio


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="unknown model preset 't5-tiny'.*t5-small"):
        get_preset("t5-tiny")


def test_overrides_and_dtypes():
    config = get_preset("t5-small", num_encoder_layers=1, num_decoder_layers=1, vocab_size=64,
                        param_dtype="bfloat16")
    params = init_params(config, jax.random.PRNGKey(0))
    assert {x.value.dtype for x in jax.tree_util.tree_leaves(
        params, is_leaf=lambda x: hasattr(x, "names"))} == {np.dtype("bfloat16")}
    with pytest.raises(ConfigError, match="feed_forward_proj"):
        get_preset("t5-small", feed_forward_proj="swish-glu")
