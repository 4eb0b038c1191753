"""Every config.json variant of the T5 family loads to the model transformers builds from it.

Each variant is a config.json as the hub's checkpoints and transformers 4 wrote it, and the same
checkpoint after the installed transformers (5.x) re-saved it (which writes `tie_word_embeddings: true`
everywhere, `scale_decoder_outputs` for T5 and no scaling key for mT5). The reference is transformers'
own logits for that directory; the bound is `assert_close_to_float64`'s.
"""

import copy
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from miniend_jax.checkpoints.hf import load_hf_checkpoint
from miniend_jax.models.t5 import T5
from tests.conftest import assert_close_to_float64, padded_batch, torch_logits

BASE = dict(vocab_size=96, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2, relative_attention_num_buckets=8,
            relative_attention_max_distance=12, dropout_rate=0.0, layer_norm_epsilon=1e-6, pad_token_id=0,
            eos_token_id=1, decoder_start_token_id=0, is_encoder_decoder=True)
GATED_UNTIED = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
# name: (model_type, separate lm_head weights?, config.json fields)
VARIANTS = {
    "t5_v1_0_no_flags": ("t5", False, {}),                        # t5-small on the hub: relu, tied, scaled
    "t5_v1_0_tie_true": ("t5", False, dict(feed_forward_proj="relu", tie_word_embeddings=True)),
    "t5_relu_untied": ("t5", True, dict(feed_forward_proj="relu", tie_word_embeddings=False)),
    "t5_gelu": ("t5", False, dict(feed_forward_proj="gelu")),
    "t5_v1_1": ("t5", True, GATED_UNTIED),
    "flan_t5": ("t5", True, dict(GATED_UNTIED, is_gated_act=True, dense_act_fn="gelu_new")),
    "t5_gated_gelu_new": ("t5", True, dict(feed_forward_proj="gated-gelu_new", tie_word_embeddings=False)),
    "t5_gated_silu": ("t5", True, dict(feed_forward_proj="gated-silu", tie_word_embeddings=False)),
    "t5_gated_relu": ("t5", True, dict(feed_forward_proj="gated-relu", tie_word_embeddings=False)),
    "t5_no_max_distance": ("t5", True, GATED_UNTIED),             # relative_attention_max_distance absent
    "t5_tie_true_separate_head": ("t5", True, dict(feed_forward_proj="gated-gelu", tie_word_embeddings=True)),
    "t5_scale_false_tied": ("t5", False, dict(feed_forward_proj="relu", tie_word_embeddings=True,
                                              scale_decoder_outputs=False)),
    "mt5": ("mt5", True, GATED_UNTIED),                           # google/mt5-small on the hub
    "mt5_tie_true_separate_head": ("mt5", True, dict(feed_forward_proj="gated-gelu", tie_word_embeddings=True)),
    "mt5_tied": ("mt5", False, dict(feed_forward_proj="gated-gelu", tie_word_embeddings=True)),
}


def _write_variant(directory, name: str, resave: bool) -> dict:
    model_type, separate_head, fields = VARIANTS[name]
    hf = dict(BASE, model_type=model_type, **fields,
              architectures=["MT5ForConditionalGeneration" if model_type == "mt5" else "T5ForConditionalGeneration"])
    if name == "t5_no_max_distance":
        del hf["relative_attention_max_distance"]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf, f)
    torch.manual_seed(0)
    model = transformers.AutoModelForSeq2SeqLM.from_config(transformers.AutoConfig.from_pretrained(directory))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    if separate_head:
        model.lm_head.weight = torch.nn.Parameter(torch.randn(hf["vocab_size"], hf["d_model"]) * 0.5)
    model.save_pretrained(directory)  # the installed transformers writes its own config.json ...
    if not resave:                    # ... or the hub's / transformers 4's is kept
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(hf, f)
    with open(os.path.join(directory, "config.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("resave", [False, True], ids=["as_written", "resaved_by_transformers"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_loads_to_the_model_transformers_builds(tmp_path, name, resave):
    written = _write_variant(str(tmp_path), name, resave)
    reference = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path)).eval()
    enc, dec, _ = padded_batch(96)
    config, params = load_hf_checkpoint(str(tmp_path))
    ours = np.asarray(T5(config).apply({"params": params}, jnp.asarray(enc), jnp.asarray(dec)).logits)
    theirs = torch_logits(reference, enc, dec)
    assert_close_to_float64(ours, torch_logits(copy.deepcopy(reference).double(), enc, dec), theirs,
                            err_msg=f"{name} {written}")
    tied = reference.lm_head.weight.data_ptr() == reference.shared.weight.data_ptr()
    assert config.tie_word_embeddings == tied
    assert config.scale_decoder_outputs == bool(getattr(reference.config, "scale_decoder_outputs", False))
