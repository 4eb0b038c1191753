"""Greedy decoding and beam search with the key/value cache against PyTorch `generate` (greedy, HF's beam
search), a plain-Python t5x beam search, and an exhaustive search (both length-penalty rules)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from miniend_jax.checkpoints.hf import load_hf_checkpoint
from miniend_jax.evaluation.decoding import beam_search, greedy_decode, length_penalty_divisor
from miniend_jax.models.t5 import T5
from tests.conftest import assert_close_to_float64, padded_batch


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
    """HF's rule only: t5x lets the runner-up candidate finish too, so its one-beam search is not greedy
    (the t5 rule's one beam is held to the t5x reference below)."""
    model, params, enc = _model_and_inputs(golden, seed=3)
    greedy = np.asarray(greedy_decode(model, params, jnp.asarray(enc), 12))
    beam = np.asarray(beam_search(model, params, jnp.asarray(enc), 12, num_beams=1, length_penalty_rule="hf"))
    np.testing.assert_array_equal(beam, greedy)


def test_beam_search_matches_generate(golden):
    model, params, enc = _model_and_inputs(golden, seed=6)
    ours = np.asarray(beam_search(model, params, jnp.asarray(enc), 10, num_beams=4, length_penalty=1.0,
                                  length_penalty_rule="hf"))
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
        ours = np.asarray(beam_search(model, params, jnp.asarray(enc), 10, num_beams=4, length_penalty=penalty,
                                      length_penalty_rule="hf"))
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
    from tests.conftest import build_hf_model
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
                                 length_penalty_rule="hf", return_scores=True)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    with torch.no_grad():
        out = hf_model.generate(num_beams=4, length_penalty=penalty, early_stopping=False, **kwargs)
    _assert_same_hypotheses(tokens, out.sequences[:, 1:].numpy())
    reference, lengths = _float64_log_prob(hf_model, enc, tokens)
    reference = reference / np.asarray(lengths, np.float64) ** penalty
    assert_close_to_float64(scores, reference, out.sequences_scores.numpy(), err_msg="beam score")


# The length-penalty rules, each against a reference written from its formula.

def test_length_penalty_divisor_is_each_rules_formula():
    """t5: Wu et al. 2016's brevity penalty ((5 + n) / 6) ** alpha (t5x `brevity_penalty`); hf: n ** alpha."""
    lengths = np.arange(1, 40)
    for alpha in (0.0, 0.6, 1.0, 2.0):
        np.testing.assert_allclose(np.asarray(length_penalty_divisor("t5", alpha, lengths)),
                                   ((5.0 + lengths) / 6.0) ** alpha, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(length_penalty_divisor("hf", alpha, lengths)),
                                   lengths.astype(np.float64) ** alpha, rtol=1e-6)
    with pytest.raises(ValueError, match="length_penalty_rule='t5x'"):
        length_penalty_divisor("t5x", 0.6, lengths)


def _next_log_probs64(model64, enc_row, prefixes):
    """float64 log P(next token | prefix) `[len(prefixes), vocab]`, each prefix (a tuple of generated
    tokens) teacher-forced after the start token."""
    import scipy.special
    width = max(len(p) for p in prefixes) + 1
    dec = np.zeros((len(prefixes), width), np.int64)
    for i, prefix in enumerate(prefixes):
        dec[i, 1: len(prefix) + 1] = prefix
    enc = np.repeat(enc_row[None], len(prefixes), axis=0)
    with torch.no_grad():
        logits = model64(input_ids=torch.tensor(enc, dtype=torch.long),
                         attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                         decoder_input_ids=torch.tensor(dec)).logits.numpy()
    last = np.array([len(p) for p in prefixes])
    return scipy.special.log_softmax(logits[np.arange(len(prefixes)), last], axis=-1)


def _t5x_reference(next_log_probs, k, length, alpha, eos=1):
    """t5x's beam search written out plainly: the 2k best continuations by log-probability; each that ends
    with EOS competes for the k finished slots with score log-prob / ((5 + n) / 6) ** alpha (n counts
    EOS); the k best without EOS continue; stop when the k slots are full and the worst beats the best live
    log-prob / ((5 + length + 1) / 6) ** alpha. Returns (score, tokens): the best finished hypothesis, or the
    best live one with its log-probability when none finished."""
    penalty = lambda n: ((5.0 + n) / 6.0) ** alpha
    live, finished = [((), 0.0)], []
    for t in range(length):
        rows = next_log_probs([seq for seq, _ in live])
        candidates = sorted(((lp + float(x), seq + (v,)) for (seq, lp), row in zip(live, rows)
                             for v, x in enumerate(row)), key=lambda c: -c[0])[: 2 * k]
        finished = sorted(finished + [(lp / penalty(t + 1), seq) for lp, seq in candidates if seq[-1] == eos],
                          key=lambda c: -c[0])[:k]
        live = [(seq, lp) for lp, seq in candidates if seq[-1] != eos][:k]
        if len(finished) == k and finished[-1][0] > live[0][1] / penalty(length + 1):
            break
    return finished[0] if finished else (live[0][1], live[0][0])


def _eos_biased_model(tmp_path, factor: float, **config_changes):
    """A random v1.1 HF model whose EOS logit is scaled by `factor` (hypotheses end at several lengths),
    saved to `tmp_path`; returns (HF model, T5 module, params)."""
    import transformers

    from tests.conftest import GOLDEN_CONFIGS, build_hf_model
    if config_changes:
        torch.manual_seed(1)
        config = transformers.T5Config(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
                                       **{**GOLDEN_CONFIGS["v1_1"], **config_changes})
        hf_model = transformers.T5ForConditionalGeneration(config).eval()
        with torch.no_grad():
            for p in hf_model.parameters():
                p.normal_(0.0, 0.5)
    else:
        hf_model = build_hf_model("v1_1", seed=1)
    with torch.no_grad():
        hf_model.lm_head.weight[1] *= factor
    hf_model.save_pretrained(tmp_path)
    config, params = load_hf_checkpoint(str(tmp_path))
    return hf_model, T5(config), params


def test_t5_beam_search_matches_a_plain_t5x_reference(tmp_path):
    """The t5 rule returns t5x's hypothesis and score: against `_t5x_reference` over float64 log-probs of
    the same weights, for several alphas and one beam, on inputs where hypotheses end at several lengths, some rows end
    none within the limit, and the HF rule picks differently."""
    import copy
    hf_model, model, params = _eos_biased_model(tmp_path, 8.0)
    model64 = copy.deepcopy(hf_model).double()
    enc, _, _ = padded_batch(model.config.vocab_size, seed=5)
    length = 6
    lengths, differs = set(), False
    for k, alpha in ((4, 0.0), (4, 0.6), (4, 1.0), (4, 2.0), (1, 0.6)):
        tokens, scores = beam_search(model, params, jnp.asarray(enc), length, num_beams=k, length_penalty=alpha,
                                     length_penalty_rule="t5", return_scores=True)
        hf_tokens = np.asarray(beam_search(model, params, jnp.asarray(enc), length, num_beams=k,
                                           length_penalty=alpha, length_penalty_rule="hf"))
        for row, (mine, score) in enumerate(zip(np.asarray(tokens), np.asarray(scores))):
            ref_score, ref_tokens = _t5x_reference(
                lambda prefixes: _next_log_probs64(model64, enc[row], prefixes), k, length, alpha)
            assert _until_eos(mine) == list(ref_tokens), (k, alpha, row, mine, ref_tokens)
            assert np.all(mine[len(ref_tokens):] == 0)
            peer = hypothesis_score(hf_model, enc[row], ref_tokens, alpha, "t5", length)
            assert_close_to_float64(score, ref_score, peer, err_msg=f"k={k} alpha={alpha} row={row}")
            lengths.add(len(ref_tokens) if ref_tokens[-1] == 1 else 0)
            differs |= _until_eos(mine) != _until_eos(hf_tokens[row])
    assert len(lengths) > 2, "the fixture should end hypotheses at several lengths"
    assert differs, "the fixture should tell the rules apart"


def _exhaustive_best(hf_model, enc_row, vocab: int, length: int, alpha: float, rule: str):
    """(best score, runner-up score, tokens) over every hypothesis the rule can finish within `length`
    tokens: t5, those ending with EOS; hf, those and every `length`-token sequence. Scored with float64
    log-probabilities divided by the rule's penalty of the generated length (EOS counted)."""
    import copy
    import itertools
    model64 = copy.deepcopy(hf_model).double()
    sequences = [s for n in range(1, length + 1) for s in itertools.product(range(vocab), repeat=n)
                 if 1 not in s[:-1] and (s[-1] == 1 or (rule == "hf" and n == length))]
    full = [s + (0,) * (length - len(s)) for s in sequences]
    rows = _next_log_probs_all(model64, enc_row, full)
    penalty = (lambda n: ((5.0 + n) / 6.0) ** alpha) if rule == "t5" else (lambda n: float(n) ** alpha)
    scored = sorted(((sum(rows[i, t, s[t]] for t in range(len(s))) / penalty(len(s)), s)
                     for i, s in enumerate(sequences)), key=lambda c: -c[0])
    return scored[0][0], scored[1][0], scored[0][1]


def hypothesis_score(model, enc_row, tokens, alpha: float, rule: str, length: int) -> float:
    """The beam score of `tokens` (generated ids, EOS included if it ended) under `rule`, from `model`'s
    log-probabilities in its own precision: a float32 model is the independent float32 peer of the float64
    reference (`conftest.assert_close_to_float64`). t5: divided by ((5 + n) / 6) ** alpha if it ended
    with EOS, else undivided (t5x's fallback); hf: n ** alpha."""
    tokens = list(tokens)
    rows = _next_log_probs_all(model, enc_row, [tokens + [0] * (length - len(tokens))])
    total = float(sum(rows[0, t, token] for t, token in enumerate(tokens)))
    if rule == "hf":
        return total / float(len(tokens)) ** alpha
    return total / ((5.0 + len(tokens)) / 6.0) ** alpha if tokens[-1] == 1 else total


def _next_log_probs_all(model64, enc_row, sequences):
    """float64 log-softmax of the teacher-forced logits `[len(sequences), length, vocab]`."""
    import scipy.special
    seqs = np.asarray(sequences, np.int64)
    dec = np.concatenate([np.zeros((len(seqs), 1), np.int64), seqs[:, :-1]], axis=1)
    enc = np.repeat(enc_row[None], len(seqs), axis=0)
    with torch.no_grad():
        logits = model64(input_ids=torch.tensor(enc, dtype=torch.long),
                         attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                         decoder_input_ids=torch.tensor(dec)).logits.numpy()
    return scipy.special.log_softmax(logits, axis=-1)


@pytest.mark.parametrize("rule", ["t5", "hf"])
def test_beam_search_wide_enough_to_be_exhaustive_returns_the_rules_best_hypothesis(tmp_path, rule):
    """Vocabulary 6, 3 tokens: with 2k at least the candidates of the last step (t5: 25 live prefixes x 6;
    hf: every step's candidates also among the k best, k = 150) beam search sees every hypothesis, so it
    must return the best one under its rule by enumeration. Alpha 0.6, the configs' T5 value."""
    vocab, length, alpha = 6, 3, 0.6
    k = 75 if rule == "t5" else 150
    hf_model, model, params = _eos_biased_model(tmp_path, 1.5, vocab_size=vocab)
    enc, _, _ = padded_batch(vocab, seed=2)
    tokens, scores = beam_search(model, params, jnp.asarray(enc), length, num_beams=k, length_penalty=alpha,
                                 length_penalty_rule=rule, return_scores=True)
    other = "hf" if rule == "t5" else "t5"
    differs = False
    for row, (mine, score) in enumerate(zip(np.asarray(tokens), np.asarray(scores))):
        best, runner_up, expected = _exhaustive_best(hf_model, enc[row], vocab, length, alpha, rule)
        assert best - runner_up > 1e-4, "the fixture should have one best hypothesis, clear of float32 rounding"
        assert _until_eos(mine) == list(expected), (row, mine, expected)
        assert_close_to_float64(score, best, hypothesis_score(hf_model, enc[row], expected, alpha, rule, length))
        differs |= _exhaustive_best(hf_model, enc[row], vocab, length, alpha, other)[2] != expected
    assert differs, "the fixture should tell the rules apart"


def test_beam_search_rejects_an_unknown_rule_and_t5_early_stopping(golden):
    model, params, enc = _model_and_inputs(golden, seed=3)
    with pytest.raises(ValueError, match="length_penalty_rule='t5x'"):
        beam_search(model, params, jnp.asarray(enc), 4, length_penalty_rule="t5x")
    with pytest.raises(ValueError, match="early_stopping"):
        beam_search(model, params, jnp.asarray(enc), 4, length_penalty_rule="t5", early_stopping=True)
