"""Greedy decoding with the key/value cache against PyTorch `generate`."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from miniend_jax.checkpoints.hf import load_hf_checkpoint
from miniend_jax.evaluation.decoding import beam_search, greedy_decode
from miniend_jax.models.t5 import T5
from tests.conftest import padded_batch


def _hf_greedy(model, enc, max_new_tokens):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(enc, dtype=torch.long),
                             attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                             num_beams=1, do_sample=False, max_new_tokens=max_new_tokens, min_length=0)
    return out[:, 1:].numpy()  # drop the decoder start token


@pytest.mark.parametrize("scan_layers", [False, True])
def test_greedy_decode_matches_generate(golden, scan_layers):
    name, hf_model, directory = golden
    if scan_layers and name != "v1_1":
        pytest.skip("the scanned layout is decoded through the unrolled one: one model shows it")
    config, params = load_hf_checkpoint(directory, scan_layers=scan_layers)
    enc, _, _ = padded_batch(config.vocab_size, seed=3)
    max_len = 12
    ours = np.asarray(greedy_decode(T5(config), params, jnp.asarray(enc), max_len))
    theirs = _hf_greedy(hf_model, enc, max_len)
    assert ours.shape == (enc.shape[0], max_len)
    np.testing.assert_array_equal(ours[:, : theirs.shape[1]], theirs)
    assert np.all(ours[:, theirs.shape[1]:] == config.pad_token_id)


def test_greedy_decode_stops_at_eos_and_pads(tmp_path):
    """A model biased towards EOS ends some sequences early; both implementations pad after EOS."""
    from tests.conftest import build_hf_model
    hf_model = build_hf_model("v1_1", seed=1)
    with torch.no_grad():
        hf_model.lm_head.weight[1] *= 6.0  # make EOS (id 1) win at some, not all, steps
    hf_model.save_pretrained(tmp_path)
    config, params = load_hf_checkpoint(str(tmp_path))
    enc, _, _ = padded_batch(config.vocab_size, seed=5)
    ours = np.asarray(greedy_decode(T5(config), params, jnp.asarray(enc), 10))
    theirs = _hf_greedy(hf_model, enc, 10)
    np.testing.assert_array_equal(ours[:, : theirs.shape[1]], theirs)
    ended = [row for row in ours if config.eos_token_id in row]
    assert 0 < len(ended) < len(ours), "the fixture should end some sequences early, not all"
    for row in ended:
        eos_at = list(row).index(config.eos_token_id)
        assert np.all(row[eos_at + 1:] == config.pad_token_id)


def _model_and_inputs(golden, seed: int):
    """(T5 module, its parameters, encoder tokens) of the golden HF checkpoint."""
    config, params = load_hf_checkpoint(golden[2])
    enc, _, _ = padded_batch(config.vocab_size, seed=seed)
    return T5(config), params, enc


def test_cached_decoding_equals_teacher_forcing(golden):
    """Each cached step's logits equal the full teacher-forced pass over the decoded prefix."""
    model, params, enc = _model_and_inputs(golden, seed=4)
    tokens = np.asarray(greedy_decode(model, params, jnp.asarray(enc), 8))
    dec_inputs = np.concatenate([np.zeros((enc.shape[0], 1), np.int32), tokens[:, :-1]], axis=1)
    logits = np.asarray(model.apply({"params": params}, enc, dec_inputs).logits)
    first_eos = [list(r).index(1) if 1 in r else len(r) for r in tokens]
    for row, stop in enumerate(first_eos):
        np.testing.assert_array_equal(logits[row, : stop + 1].argmax(-1), tokens[row, : stop + 1])


def _hf_beam(model, enc, max_new_tokens, num_beams, length_penalty=1.0):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(enc, dtype=torch.long),
                             attention_mask=torch.tensor(enc > 0, dtype=torch.long), num_beams=num_beams,
                             do_sample=False, max_new_tokens=max_new_tokens, min_length=0,
                             length_penalty=length_penalty, early_stopping=False)
    return out[:, 1:].numpy()


def _until_eos(row, eos=1):
    row = list(row)
    return row[: row.index(eos) + 1] if eos in row else row


def _assert_same_hypotheses(ours, theirs, pad=0):
    """Token-identical up to and including EOS; `generate` may fill the rest with EOS or pad, we pad."""
    for mine, reference in zip(ours, theirs):
        kept = _until_eos(reference)
        assert _until_eos(mine) == kept, (mine, reference)
        assert np.all(np.asarray(mine[len(kept):]) == pad)


def test_beam_search_with_one_beam_is_greedy(golden):
    model, params, enc = _model_and_inputs(golden, seed=3)
    greedy = np.asarray(greedy_decode(model, params, jnp.asarray(enc), 12))
    beam = np.asarray(beam_search(model, params, jnp.asarray(enc), 12, num_beams=1))
    np.testing.assert_array_equal(beam, greedy)


def test_beam_search_matches_generate(golden):
    model, params, enc = _model_and_inputs(golden, seed=6)
    ours = np.asarray(beam_search(model, params, jnp.asarray(enc), 10, num_beams=4))
    _assert_same_hypotheses(ours, _hf_beam(golden[1], enc, 10, 4))


def test_beam_search_with_eos_and_length_penalty_matches_generate(tmp_path):
    """EOS wins at some steps, so hypotheses finish at different lengths and the length penalty and the
    early-stopping heuristic decide which is returned."""
    from tests.conftest import build_hf_model
    hf_model = build_hf_model("v1_1", seed=1)
    with torch.no_grad():
        hf_model.lm_head.weight[1] *= 10.0
    hf_model.save_pretrained(tmp_path)
    config, params = load_hf_checkpoint(str(tmp_path))
    enc, _, _ = padded_batch(config.vocab_size, seed=5)
    model = T5(config)
    lengths = set()
    for penalty in (1.0, 0.6, 2.0):
        ours = np.asarray(beam_search(model, params, jnp.asarray(enc), 10, num_beams=4, length_penalty=penalty))
        _assert_same_hypotheses(ours, _hf_beam(hf_model, enc, 10, 4, penalty))
        lengths |= {len(_until_eos(row)) for row in ours}
    assert len(lengths) > 2, "the fixture should end hypotheses at several lengths"


def _float64_log_prob(hf_model, enc, hypotheses):
    """log P(hypothesis | input) up to and including EOS, teacher-forced in float64 (the reference)."""
    import copy

    import scipy.special
    model64 = copy.deepcopy(hf_model).double()
    rows = [_until_eos(h) for h in hypotheses]
    width = max(len(r) for r in rows)
    labels = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        labels[i, : len(r)] = r
    with torch.no_grad():
        logits = model64(input_ids=torch.tensor(enc, dtype=torch.long),
                         attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                         labels=torch.tensor(labels)).logits.numpy()
    log_probs = scipy.special.log_softmax(logits, axis=-1)
    picked = np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return np.array([picked[i, : len(r)].sum() for i, r in enumerate(rows)]), [len(r) for r in rows]


def test_hypothesis_scores_match_generate_and_a_float64_reference(tmp_path):
    """Greedy: the hypothesis's log-probability (HF: the sum of `compute_transition_scores` with normalized
    logits); beam search: HF's `sequences_scores` (log-probability / length ** length_penalty). Both
    against the float64 teacher-forced log-probability, within float32's distance of PyTorch's."""
    from tests.conftest import assert_close_to_float64, build_hf_model
    hf_model = build_hf_model("v1_1", seed=1)
    with torch.no_grad():
        hf_model.lm_head.weight[1] *= 6.0  # hypotheses of several lengths
    hf_model.save_pretrained(tmp_path)
    config, params = load_hf_checkpoint(str(tmp_path))
    enc, _, _ = padded_batch(config.vocab_size, seed=5)
    model, kwargs = T5(config), dict(input_ids=torch.tensor(enc, dtype=torch.long),
                                     attention_mask=torch.tensor(enc > 0, dtype=torch.long), do_sample=False,
                                     max_new_tokens=10, min_length=0, output_scores=True,
                                     return_dict_in_generate=True)

    tokens, scores = greedy_decode(model, params, jnp.asarray(enc), 10, return_scores=True)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    with torch.no_grad():
        out = hf_model.generate(num_beams=1, **kwargs)
    transition = hf_model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).numpy()
    reference, lengths = _float64_log_prob(hf_model, enc, tokens)
    assert len(set(lengths)) > 1
    peer = np.array([transition[i, :n].sum() for i, n in enumerate(lengths)])
    assert_close_to_float64(scores, reference, peer, err_msg="greedy log-probability")

    penalty = 0.6
    tokens, scores = beam_search(model, params, jnp.asarray(enc), 10, num_beams=4, length_penalty=penalty,
                                 return_scores=True)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    with torch.no_grad():
        out = hf_model.generate(num_beams=4, length_penalty=penalty, early_stopping=False, **kwargs)
    _assert_same_hypotheses(tokens, out.sequences[:, 1:].numpy())
    reference, lengths = _float64_log_prob(hf_model, enc, tokens)
    reference = reference / np.asarray(lengths, np.float64) ** penalty
    assert_close_to_float64(scores, reference, out.sequences_scores.numpy(), err_msg="beam score")
