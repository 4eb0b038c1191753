"""The Flax BART against PyTorch `transformers` `BartForConditionalGeneration` on the same weights and batch:
logits and attention taps (float64 reference, bounds as in test_t5_golden.py), HF import of the layouts
transformers 4 and 5 write, export that transformers loads, and greedy and beam search equal to `generate`
with BART's generation settings."""

import copy
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from miniend_jax.checkpoints import hf_bart
from miniend_jax.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from miniend_jax.distill.objectives import OBJECTIVES
from miniend_jax.errors import CheckpointError, ConfigError
from miniend_jax.evaluation.decoding import LogitsRules, beam_search, greedy_decode
from miniend_jax.models import Bart, BartConfig, Taps, get_preset, init_params
from miniend_jax.models.bart import segment_positions
from miniend_jax.models.common import stack_layers
from tests.conftest import assert_close_to_float64, assert_float32_equivalent

VOCAB = 97
HF_PAD = 1


def _swap(ids):
    """HF ids <-> pipeline ids (0 and BART's pad id 1 exchanged)."""
    ids = np.asarray(ids)
    return np.where(ids == 0, HF_PAD, np.where(ids == HF_PAD, 0, ids))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(HF model float32, the same in float64, directory it was saved to), seeded random weights."""
    torch.manual_seed(0)
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=40,
        scale_embedding=True, dropout=0.0)
    model = transformers.BartForConditionalGeneration(config).eval()
    with torch.no_grad():   # random, not zero: the bias and the layer norms must be read the right way round
        model.final_logits_bias.normal_(0, 0.5)
        for name, param in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                param.add_(torch.randn_like(param) * 0.2)
    directory = tmp_path_factory.mktemp("bart") / "hf"
    model.save_pretrained(directory)
    return model, copy.deepcopy(model).double(), str(directory)


def _hf_batch(seed=0):
    """HF ids: `<s> ... </s>` encoder rows of unequal length (pad 1), decoder inputs starting with `</s>`."""
    rng = np.random.default_rng(seed)
    enc = np.full((3, 11), HF_PAD)
    for row, length in enumerate((11, 7, 4)):
        enc[row, :length] = np.concatenate([[0], rng.integers(4, VOCAB, length - 2), [2]])
    labels = np.concatenate([np.zeros((3, 1), int), rng.integers(4, VOCAB, (3, 6))], axis=1)
    dec = np.concatenate([np.full((3, 1), 2), labels[:, :-1]], axis=1)
    return enc, dec


def _torch(model, enc, dec, **kwargs):
    with torch.no_grad():
        return model(input_ids=torch.tensor(enc), attention_mask=torch.tensor((enc != HF_PAD).astype(np.int64)),
                     decoder_input_ids=torch.tensor(dec), **kwargs)


def _ours(config, params, enc, dec, taps=Taps()):
    """Our forward pass on the pipeline's view of a HF batch (ids swapped; the decoder start as seqio
    writes it, id 0). Logits are returned in HF's vocabulary order."""
    dec = _swap(dec)
    dec[:, 0] = 0
    out = Bart(config).apply({"params": params}, jnp.asarray(_swap(enc)), jnp.asarray(dec), taps=taps)
    return np.asarray(out.logits)[..., _swap(np.arange(VOCAB))], out.taps


@pytest.mark.parametrize("scan_layers", [False, True])
def test_logits_match_pytorch(reference, scan_layers):
    model, model64, directory = reference
    config, params = load_hf_checkpoint(directory, scan_layers=scan_layers)
    assert config.scale_embedding and config.hf_pad_token_id == HF_PAD and config.decoder_start_token_id == 2
    enc, dec = _hf_batch()
    ours, _ = _ours(config, params, enc, dec)
    theirs = _torch(model, enc, dec).logits.numpy()
    assert_close_to_float64(ours, _torch(model64, enc, dec).logits.numpy(), theirs)
    assert np.abs(theirs).max() > 0.1


def _capture_projections(model, enc, dec):
    """{(kind, "q"|"k"|"v"): output of that projection} of the layers the taps test reads, by forward hooks."""
    captured, hooks = {}, []
    modules = {"encoder_self": model.model.encoder.layers[1].self_attn,
               "decoder_self": model.model.decoder.layers[2].self_attn,
               "cross": model.model.decoder.layers[0].encoder_attn}
    for kind, attention in modules.items():
        for proj in ("q", "k", "v"):
            hooks.append(getattr(attention, f"{proj}_proj").register_forward_hook(
                lambda module, inputs, output, key=(kind, proj): captured.__setitem__(key, output.numpy())))
    _torch(model, enc, dec)
    for hook in hooks:
        hook.remove()
    return captured


def test_taps_are_the_projections_pytorch_computes(reference):
    model, model64, directory = reference
    config, params = load_hf_checkpoint(directory)
    enc, dec = _hf_batch(1)
    peer, reference64 = _capture_projections(model, enc, dec), _capture_projections(model64, enc, dec)
    _, taps = _ours(config, params, enc, dec, Taps(encoder_self=(-1,), decoder_self=(2,), cross=(0,)))
    for (kind, layer) in (("encoder_self", -1), ("decoder_self", 2), ("cross", 0)):
        for proj in ("q", "k", "v"):
            assert_close_to_float64(getattr(taps[kind][layer], proj), reference64[(kind, proj)], peer[(kind, proj)],
                                    err_msg=f"{kind} {proj}")


def test_packed_segments_restart_positions():
    np.testing.assert_array_equal(segment_positions(6, jnp.array([[1, 1, 2, 2, 2, 0]])), [[0, 1, 0, 1, 2, 0]])
    config = BartConfig(vocab_size=VOCAB, d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1, max_position_embeddings=16, dropout_rate=0.0)
    params = jax.tree.map(np.asarray, nn.unbox(init_params(config, jax.random.PRNGKey(0))))
    a, b = np.array([[5, 6, 7, 2]]), np.array([[8, 9, 2, 0]])
    da, db = np.array([[0, 11, 12, 13]]), np.array([[0, 14, 15, 0]])
    single = [np.asarray(Bart(config).apply({"params": params}, e, d).logits) for e, d in ((a, da), (b, db))]
    packed = Bart(config).apply(
        {"params": params}, np.concatenate([a, b[:, :3]], 1), np.concatenate([da, db[:, :3]], 1),
        encoder_segment_ids=np.array([[1, 1, 1, 1, 2, 2, 2]]), decoder_segment_ids=np.array([[1, 1, 1, 1, 2, 2, 2]]))
    packed = np.asarray(packed.logits)
    assert_float32_equivalent(packed[:, :4], single[0])
    assert_float32_equivalent(packed[:, 4:], single[1][:, :3])


def test_transformers_4_layout_and_bart_model_checkpoints(reference, tmp_path):
    """transformers 4 wrote `pytorch_model.bin` with the token table under its aliases too, and generation
    settings inside config.json; `BartModel` checkpoints carry no `model.` prefix and no final_logits_bias."""
    model, _, directory = reference
    config, params = load_hf_checkpoint(directory)
    v4 = tmp_path / "v4"
    v4.mkdir()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["model.shared.weight"].clone()
    torch.save(state, v4 / "pytorch_model.bin")
    hf_config = json.load(open(os.path.join(directory, "config.json")))
    hf_config.update(transformers_version="4.46.0", num_beams=4, no_repeat_ngram_size=3, forced_bos_token_id=0,
                     length_penalty=2.0, min_length=5)
    hf_config["torch_dtype"] = hf_config.pop("dtype")
    json.dump(hf_config, open(v4 / "config.json", "w"))
    config4, params4 = load_hf_checkpoint(str(v4))
    assert config4 == config
    jax.tree.map(np.testing.assert_array_equal, params4, params)
    settings = hf_bart.generation_settings(hf_config, None)
    assert settings == {"num_beams": 4, "no_repeat_ngram_size": 3, "forced_bos_token_id": 1, "length_penalty": 2.0,
                        "min_length": 5, "forced_eos_token_id": 2}

    bare = tmp_path / "bare"
    bare.mkdir()
    body = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    torch.save(body, bare / "pytorch_model.bin")
    json.dump({**hf_config, "architectures": ["BartModel"]}, open(bare / "config.json", "w"))
    _, bare_params = load_hf_checkpoint(str(bare))
    np.testing.assert_array_equal(bare_params["final_logits_bias"], 0)
    np.testing.assert_array_equal(bare_params["token_embedder"]["embedding"], params["token_embedder"]["embedding"])

    state["lm_head.weight"] = torch.randn_like(state["lm_head.weight"])
    torch.save(state, v4 / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="lm_head.weight differs from the token table"):
        load_hf_checkpoint(str(v4))


def test_export_loads_in_transformers_to_the_same_logits(reference, tmp_path):
    model, _, directory = reference
    config, params = load_hf_checkpoint(directory, scan_layers=True)
    save_hf_checkpoint(str(tmp_path / "out"), config, params)
    loaded = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    enc, dec = _hf_batch(2)
    np.testing.assert_array_equal(_torch(loaded, enc, dec).logits.numpy(), _torch(model, enc, dec).logits.numpy())
    assert loaded.generation_config.forced_eos_token_id == 2 and loaded.config.pad_token_id == HF_PAD


def test_bad_bart_configs_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="mBART's architecture"):
        hf_bart.config_from_hf({"model_type": "bart", "normalize_before": True})
    with pytest.raises(CheckpointError, match="encoder_ffn_dim=64 but decoder_ffn_dim=32"):
        hf_bart.config_from_hf({"model_type": "bart", "vocab_size": 10, "d_model": 8, "encoder_layers": 1,
                                "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                                "encoder_ffn_dim": 64, "decoder_ffn_dim": 32, "max_position_embeddings": 8})
    with pytest.raises(ConfigError, match="d_model=30 is not a multiple of model.num_heads=4"):
        get_preset("bart-6l-384h", d_model=30, num_heads=4)
    with pytest.raises(ConfigError, match="not a field of a bart model config"):
        get_preset("bart-base", d_kv=64)


def test_stacked_layout_round_trip():
    config = get_preset("bart-base-3-3", vocab_size=VOCAB, d_model=16, d_ff=32, num_heads=2,
                        max_position_embeddings=16)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    scanned = Bart(config.replace(scan_layers=True)).apply(
        {"params": stack_layers(params)}, jnp.ones((2, 5), jnp.int32) * 5, jnp.ones((2, 4), jnp.int32) * 6).logits
    unrolled = Bart(config).apply({"params": params}, jnp.ones((2, 5), jnp.int32) * 5,
                                  jnp.ones((2, 4), jnp.int32) * 6).logits
    assert_float32_equivalent(scanned, unrolled)


# BART's settings (facebook/bart-large-cnn's generation_config.json, shortened): 4 beams, length penalty 2,
# early stopping, 3-gram blocking, minimum length, forced BOS and EOS.
GENERATION = dict(num_beams=4, length_penalty=2.0, early_stopping=True, no_repeat_ngram_size=3, min_length=6,
                  forced_bos_token_id=0, forced_eos_token_id=2)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_decoding_matches_generate_with_barts_settings(reference, num_beams):
    model, _, directory = reference
    config, params = load_hf_checkpoint(directory)
    enc, _ = _hf_batch(3)
    length = 12
    settings = dict(GENERATION, num_beams=num_beams)
    with torch.no_grad():
        hf = model.generate(input_ids=torch.tensor(enc), attention_mask=torch.tensor((enc != HF_PAD).astype(np.int64)),
                            max_new_tokens=length, do_sample=False, **settings).numpy()[:, 1:]
    rules = LogitsRules(min_length=settings["min_length"], no_repeat_ngram_size=3,
                        forced_bos_token_id=int(_swap(0)), forced_eos_token_id=2)
    if num_beams == 1:
        ours = greedy_decode(Bart(config), params, jnp.asarray(_swap(enc)), length, rules=rules)
    else:
        ours = beam_search(Bart(config), params, jnp.asarray(_swap(enc)), length, num_beams=4, length_penalty=2.0,
                           length_penalty_rule="hf", early_stopping=True, rules=rules)
    ours = _swap(np.asarray(ours))[:, :hf.shape[1]]
    np.testing.assert_array_equal(ours, hf)
    assert (hf[:, 0] == 0).all()                       # the forced BOS
    for row in hf:                                     # the rules were in force (not vacuous)
        tokens = list(row[: list(row).index(2) + 1]) if 2 in row else list(row)
        grams = [tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)]
        assert len(grams) == len(set(grams)) and len(tokens) + 1 >= settings["min_length"]


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_every_objective_distils_a_bart_teacher_into_a_bart_student(objective):
    """Each objective's terms are defined between BART models (of different widths and depths: the relations
    re-split each width into the same relation heads): finite, positive where they compare two models, and
    each gives the student a gradient."""
    from miniend_jax.distill.objectives import DistillSpec
    from miniend_jax.distill.terms import denominators
    from miniend_jax.train.step import forward_terms
    teacher_cfg = get_preset("bart-base", vocab_size=VOCAB, d_model=32, d_ff=48, num_heads=4, num_encoder_layers=2,
                             num_decoder_layers=2, max_position_embeddings=32, dropout_rate=0.0)
    student_cfg = teacher_cfg.replace(d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
    init = lambda cfg, seed: jax.tree.map(lambda x: x * 20, nn.unbox(   # peaked attention
        init_params(cfg, jax.random.PRNGKey(seed))))
    teacher_params, student_params = init(teacher_cfg, 1), init(student_cfg, 2)
    rng = np.random.default_rng(4)
    targets = np.concatenate([rng.integers(3, VOCAB, (2, 6)), np.zeros((2, 2), int)], 1)
    targets[:, 5] = 2
    batch = {"encoder_input_tokens": jnp.asarray(np.concatenate([rng.integers(3, VOCAB, (2, 9)), [[2], [0]]], 1)),
             "decoder_target_tokens": jnp.asarray(targets),
             "decoder_input_tokens": jnp.asarray(np.concatenate([np.zeros((2, 1), int), targets[:, :-1]], 1))}
    spec = DistillSpec(objective=objective, relation_heads=4)

    def loss(params):
        return forward_terms(spec, Bart(student_cfg), Bart(teacher_cfg), params, teacher_params, batch,
                             denominators(batch), jnp.float32(1.0))

    (total, terms), grads = jax.value_and_grad(loss, has_aux=True)(student_params)
    assert set(terms) == set(spec.terms) and np.isfinite(float(total))
    assert all(float(value) > 0 for value in terms.values()), terms
    assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grads))) > 0


def test_auto_decoding_takes_a_bart_checkpoints_generation_settings(reference, tmp_path):
    """`decode.length_penalty_rule=auto` decodes a HF BART as its generation_config.json asks (bart-large-cnn's
    settings), in the pipeline's ids; without those settings, `decode.*` stays."""
    import shutil

    from configs import base
    from miniend_jax.build import decode_settings
    directory = tmp_path / "cnn"
    shutil.copytree(reference[2], directory)
    config = base.get_config()
    config.model.source, config.model.path = "hf", str(directory)
    plain = decode_settings(config)
    assert (plain.length_penalty_rule, plain.rules) == ("t5", LogitsRules(forced_eos_token_id=2))
    json.dump({"num_beams": 4, "length_penalty": 2.0, "max_length": 142, "min_length": 56, "no_repeat_ngram_size": 3,
               "early_stopping": True, "forced_bos_token_id": 0, "forced_eos_token_id": 2, "decoder_start_token_id": 2},
              open(directory / "generation_config.json", "w"))
    settings = decode_settings(config)
    assert (settings.length_penalty_rule, settings.length_penalty, settings.early_stopping) == ("hf", 2.0, True)
    assert settings.rules == LogitsRules(min_length=56, no_repeat_ngram_size=3, forced_bos_token_id=1,
                                         forced_eos_token_id=2)


def test_auto_decoding_of_a_bart_without_files_takes_the_familys_defaults():
    """A BART preset or miniend workdir has no generation file: BART's own rules apply (3-gram blocking,
    forced `</s>`, and forced `<s>` where it has one: not for a BART given T5's ids, whose BOS is the pad)."""
    from configs import base
    from miniend_jax.build import decode_settings
    config = base.get_config()
    config.model.source, config.model.preset = "preset", "bart-base"
    assert decode_settings(config).rules == LogitsRules(no_repeat_ngram_size=3, forced_bos_token_id=1,
                                                        forced_eos_token_id=2)
    config.model.overrides = dict(eos_token_id=1, bos_token_id=0, decoder_start_token_id=0, hf_pad_token_id=0)
    assert decode_settings(config).rules == LogitsRules(no_repeat_ngram_size=3, forced_eos_token_id=1)
    config.model.preset = "t5-small"
    config.model.overrides = {}
    assert decode_settings(config).rules == LogitsRules()
