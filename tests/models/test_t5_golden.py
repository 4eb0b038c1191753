"""Golden tests: the Flax T5 against PyTorch `transformers` T5 on the same weights and batch.

The reference is PyTorch in float64; our float32 results must be as close to it as PyTorch's own float32
results are (`assert_close_to_float64`), so that the bounds hold on every CPU kind.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from miniend_jax.checkpoints.hf import load_hf_checkpoint
from miniend_jax.models.interface import Taps
from miniend_jax.models.t5 import T5, relative_position_bucket
from tests.conftest import assert_close_to_float64, padded_batch, torch_logits


def _run(config, params, enc, dec_inputs, taps=Taps()):
    return T5(config).apply({"params": params}, jnp.asarray(enc), jnp.asarray(dec_inputs), taps=taps)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_logits_match_pytorch(golden, golden64, scan_layers):
    name, hf_model, directory = golden
    config, params = load_hf_checkpoint(directory, scan_layers=scan_layers)
    assert ("layers" in params["encoder"]) == scan_layers
    assert config.tie_word_embeddings == (name == "v1_0")
    assert config.scale_decoder_outputs == (name == "v1_0")
    enc, dec_inputs, _ = padded_batch(config.vocab_size)
    ours = np.asarray(_run(config, params, enc, dec_inputs).logits)
    theirs = torch_logits(hf_model, enc, dec_inputs)
    assert_close_to_float64(ours, torch_logits(golden64, enc, dec_inputs), theirs)
    assert np.abs(theirs).max() > 0.1  # the comparison is not between near-zero values


def _capture_qkv(hf_model, enc, dec_inputs, enc_layer, dec_layer):
    """Outputs of the q/k/v projections of chosen layers, captured with forward hooks."""
    captured, hooks = {}, []
    modules = {
        "encoder_self": hf_model.encoder.block[enc_layer].layer[0].SelfAttention,
        "decoder_self": hf_model.decoder.block[dec_layer].layer[0].SelfAttention,
        "cross": hf_model.decoder.block[dec_layer].layer[1].EncDecAttention,
    }
    for kind, attention in modules.items():
        for proj in ("q", "k", "v"):
            def hook(module, inputs, output, key=(kind, proj)):
                captured[key] = output.detach().numpy()
            hooks.append(getattr(attention, proj).register_forward_hook(hook))
    torch_logits(hf_model, enc, dec_inputs)
    for h in hooks:
        h.remove()
    return captured


def test_taps_match_pytorch_projections(golden, golden64):
    _, hf_model, directory = golden
    config, params = load_hf_checkpoint(directory)
    enc, dec_inputs, _ = padded_batch(config.vocab_size)
    enc_layer, dec_layer = config.num_encoder_layers - 1, 0
    taps = Taps(encoder_self=(-1,), decoder_self=(dec_layer,), cross=(dec_layer,))
    out = _run(config, params, enc, dec_inputs, taps)
    # Only the requested layers come back.
    assert {k: set(v) for k, v in out.taps.items()} == {
        "encoder_self": {-1}, "decoder_self": {dec_layer}, "cross": {dec_layer}}
    peer = _capture_qkv(hf_model, enc, dec_inputs, enc_layer, dec_layer)
    reference = _capture_qkv(golden64, enc, dec_inputs, enc_layer, dec_layer)
    for kind, layer in (("encoder_self", -1), ("decoder_self", dec_layer), ("cross", dec_layer)):
        tap = out.taps[kind][layer]
        for proj, value in zip("qkv", tap):
            assert value.shape[-1] == config.inner_dim
            assert_close_to_float64(value, reference[(kind, proj)], peer[(kind, proj)], err_msg=f"{kind} {proj}")


def _probs_from_taps(tap, num_heads, bias, mask):
    """softmax(q k^T + bias) per head, masked, rebuilt in numpy from the projected q and k."""
    b, lq, inner = tap.q.shape
    q = np.asarray(tap.q).reshape(b, lq, num_heads, -1)
    k = np.asarray(tap.k).reshape(b, tap.k.shape[1], num_heads, -1)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) + bias
    scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(-1, keepdims=True)


def _eager_attentions(hf_model, enc, dec_inputs):
    """PyTorch's attention probabilities (only eager attention returns them); the session's shared model
    gets its own attention implementation back after."""
    previous = hf_model.config._attn_implementation
    try:
        hf_model.set_attn_implementation("eager")
        with torch.no_grad():
            return hf_model(input_ids=torch.tensor(enc, dtype=torch.long),
                            attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                            decoder_input_ids=torch.tensor(dec_inputs, dtype=torch.long), output_attentions=True)
    finally:
        hf_model.set_attn_implementation(previous)


def test_attention_probabilities_match_pytorch(golden, golden64):
    _, hf_model, directory = golden
    config, params = load_hf_checkpoint(directory)
    enc, dec_inputs, _ = padded_batch(config.vocab_size)
    last_enc, last_dec = config.num_encoder_layers - 1, config.num_decoder_layers - 1
    out = _run(config, params, enc, dec_inputs,
               Taps(encoder_self=(last_enc,), decoder_self=(last_dec,), cross=(last_dec,)))
    peer, ref = _eager_attentions(hf_model, enc, dec_inputs), _eager_attentions(golden64, enc, dec_inputs)

    def bias(stack, lq, lk, bidirectional):
        buckets = relative_position_bucket(np.arange(lk)[None] - np.arange(lq)[:, None], bidirectional,
                                           config.relative_attention_num_buckets,
                                           config.relative_attention_max_distance)
        table = np.asarray(params[stack]["relpos_bias"]["rel_embedding"])
        return table[buckets].transpose(2, 0, 1)[None]

    le, ld = enc.shape[1], dec_inputs.shape[1]
    key_valid = (enc > 0)[:, None, None, :]
    causal = np.tril(np.ones((ld, ld), bool))[None, None]
    cases = [
        ("encoder_self", last_enc, bias("encoder", le, le, True), key_valid, "encoder_attentions"),
        ("decoder_self", last_dec, bias("decoder", ld, ld, False), causal, "decoder_attentions"),
        ("cross", last_dec, 0.0, key_valid, "cross_attentions"),
    ]
    for kind, layer, b, mask, field in cases:
        ours = _probs_from_taps(out.taps[kind][layer], config.num_heads, b, mask)
        assert_close_to_float64(ours, getattr(ref, field)[layer].numpy(), getattr(peer, field)[layer].numpy(),
                                err_msg=kind)


@pytest.mark.parametrize("bidirectional,num_buckets,max_distance",
                         [(True, 32, 128), (False, 32, 128), (True, 8, 12), (False, 16, 20)])
def test_relative_position_bucket_matches_pytorch(bidirectional, num_buckets, max_distance):
    from transformers.models.t5.modeling_t5 import T5Attention
    relative = np.arange(-700, 700)
    theirs = T5Attention._relative_position_bucket(torch.tensor(relative), bidirectional=bidirectional,
                                                   num_buckets=num_buckets, max_distance=max_distance)
    ours = relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_packed_segments_equal_separate_examples(golden, golden64):
    """Two examples packed in one row (seqio's segment ids) give the logits PyTorch gives each alone."""
    _, hf_model, directory = golden
    config, params = load_hf_checkpoint(directory)
    enc, dec_inputs, targets = padded_batch(config.vocab_size)
    e0, e1 = enc[1][:7], enc[2][:3]
    t0, t1 = targets[1][:5], targets[2][:2]
    shift = lambda t: np.concatenate([[0], t[:-1]]).astype(np.int32)
    packed_enc = np.zeros((1, 12), np.int32)
    packed_enc[0, :10] = np.concatenate([e0, e1])
    enc_seg = np.zeros((1, 12), np.int32)
    enc_seg[0, :7], enc_seg[0, 7:10] = 1, 2
    packed_dec = np.zeros((1, 8), np.int32)
    packed_dec[0, :7] = np.concatenate([shift(t0), shift(t1)])
    packed_tgt = np.zeros((1, 8), np.int32)
    packed_tgt[0, :7] = np.concatenate([t0, t1])
    dec_seg = np.zeros((1, 8), np.int32)
    dec_seg[0, :5], dec_seg[0, 5:7] = 1, 2
    model = T5(config)
    packed = model.apply({"params": params}, packed_enc, packed_dec, packed_tgt, enc_seg, dec_seg).logits[0]
    for rows, e, t in ((slice(0, 5), e0, t0), (slice(5, 7), e1, t1)):
        alone = [torch_logits(m, e[None], shift(t)[None])[0] for m in (golden64, hf_model)]
        assert_close_to_float64(packed[rows], *alone)
    assert np.all(np.isfinite(np.asarray(packed)))  # padded rows are finite, not NaN
