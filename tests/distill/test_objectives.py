"""Loss terms against an independent numpy implementation written row by row from METHOD.md."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from miniend_jax.distill import objectives, relations
from miniend_jax.distill.objectives import DistillSpec, Interpolation, compute_terms, total_loss
from miniend_jax.distill.terms import TERMS, denominators
from miniend_jax.errors import ConfigError
from miniend_jax.models import T5, T5Config, init_params
from miniend_jax.models.interface import AttentionTap, Seq2SeqOutput

R = 4
VOCAB = 11


# ---------------------------------------------------------------------------------------------
# numpy reference
# ---------------------------------------------------------------------------------------------
def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_kl(p_logits, q_logits):
    lp, lq = np_log_softmax(p_logits), np_log_softmax(q_logits)
    return float(np.sum(np.exp(lp) * (lp - lq)))


def np_relation_loss(ta, tb, sa, sb, allowed, query_valid):
    """Mean over (batch, relation head, valid query row) of KL over the allowed keys of that row."""
    losses = []
    for b in range(ta.shape[0]):
        for r in range(R):
            for q in range(ta.shape[1]):
                if not query_valid[b, q]:
                    continue
                keys = [k for k in range(tb.shape[1]) if allowed(b, q, k)]
                def rel(a, bb):
                    d = a.shape[-1] // R
                    return np.array([a[b, q, r * d:(r + 1) * d] @ bb[b, k, r * d:(r + 1) * d]
                                     for k in keys]) / np.sqrt(d)
                losses.append(np_kl(rel(ta, tb), rel(sa, sb)))
    return float(np.mean(losses))


def np_terms(teacher, student, batch, temperature=1.0):
    enc, dec_t = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
    enc_seg = batch.get("encoder_segment_ids", (enc > 0).astype(int))
    dec_seg = batch.get("decoder_segment_ids", (dec_t > 0).astype(int))
    enc_valid, dec_valid = enc > 0, dec_t > 0
    enc_allowed = lambda b, q, k: enc[b, k] > 0 and enc_seg[b, q] == enc_seg[b, k]
    dec_allowed = lambda b, q, k: k <= q and dec_t[b, k] > 0 and dec_seg[b, q] == dec_seg[b, k]
    cross_allowed = lambda b, q, k: enc[b, k] > 0 and dec_seg[b, q] == enc_seg[b, k]
    if "encoder_segment_ids" not in batch:  # unpacked: no segment restriction
        enc_allowed = lambda b, q, k: enc[b, k] > 0
        dec_allowed = lambda b, q, k: k <= q and dec_t[b, k] > 0
        cross_allowed = lambda b, q, k: enc[b, k] > 0
    t_e, s_e = teacher.taps["encoder_self"][-1], student.taps["encoder_self"][-1]
    t_d, s_d = teacher.taps["decoder_self"][-1], student.taps["decoder_self"][-1]
    t_c, s_c = teacher.taps["cross"][-1], student.taps["cross"][-1]
    n = lambda x: np.asarray(x, np.float64)
    self_loss = lambda t, s, allowed, valid: np.mean(
        [np_relation_loss(n(ti), n(ti), n(si), n(si), allowed, valid) for ti, si in zip(t, s)])
    terms = {
        "encoder_self": self_loss(t_e, s_e, enc_allowed, enc_valid),
        "decoder_self": self_loss(t_d, s_d, dec_allowed, dec_valid),
        "cross": np.mean([
            np_relation_loss(n(t_c.q), n(t_c.k), n(s_c.q), n(s_c.k), cross_allowed, dec_valid),
            np_relation_loss(n(t_c.k), n(t_c.k), n(s_c.k), n(s_c.k), enc_allowed, enc_valid),
            np_relation_loss(n(t_c.v), n(t_c.v), n(s_c.v), n(s_c.v), enc_allowed, enc_valid)]),
    }
    tl, sl = n(teacher.logits), n(student.logits)
    kls = [temperature ** 2 * np_kl(tl[b, i] / temperature, sl[b, i] / temperature)
           for b, i in itertools.product(range(tl.shape[0]), range(tl.shape[1])) if dec_valid[b, i]]
    terms["logit"] = float(np.mean(kls))
    nll = [-np_log_softmax(sl[b, i])[dec_t[b, i]]
           for b, i in itertools.product(range(sl.shape[0]), range(sl.shape[1])) if dec_valid[b, i]]
    terms["ground_truth"] = float(np.mean(nll))
    return terms


# ---------------------------------------------------------------------------------------------
# fixtures: random outputs with padding, and a packed batch
# ---------------------------------------------------------------------------------------------
def _batch(packed: bool):
    if packed:
        enc = np.array([[5, 6, 7, 8, 9, 4, 3, 0], [2, 3, 4, 5, 6, 7, 8, 9]])
        enc_seg = np.array([[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
        dec_t = np.array([[3, 4, 1, 5, 6, 1, 0], [7, 8, 9, 3, 2, 1, 0]])
        dec_seg = np.array([[1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 0]])
        dec_in = np.where(np.diff(np.concatenate([np.zeros((2, 1), int), dec_seg], 1), axis=1) != 0, 0,
                          np.concatenate([np.zeros((2, 1), int), dec_t[:, :-1]], 1))
        return {"encoder_input_tokens": enc, "decoder_target_tokens": dec_t, "decoder_input_tokens": dec_in,
                "encoder_segment_ids": enc_seg, "decoder_segment_ids": dec_seg,
                "decoder_loss_weights": (dec_t > 0).astype(np.float32)}
    enc = np.array([[5, 6, 7, 8, 9, 4, 3, 1], [2, 3, 4, 1, 0, 0, 0, 0], [9, 1, 0, 0, 0, 0, 0, 0]])
    dec_t = np.array([[3, 4, 5, 6, 7, 8, 1], [7, 8, 1, 0, 0, 0, 0], [2, 3, 4, 5, 1, 0, 0]])
    dec_in = np.concatenate([np.zeros((3, 1), int), dec_t[:, :-1]], 1)
    return {"encoder_input_tokens": enc, "decoder_target_tokens": dec_t, "decoder_input_tokens": dec_in}


def _random_output(rng, batch, width):
    b, le = batch["encoder_input_tokens"].shape
    ld = batch["decoder_target_tokens"].shape[1]
    x = lambda *shape: jnp.asarray(rng.normal(size=shape) * 2.0, jnp.float32)
    tap = lambda lq, lk: AttentionTap(x(b, lq, width), x(b, lk, width), x(b, lk, width))
    return Seq2SeqOutput(x(b, ld, VOCAB), {"encoder_self": {-1: tap(le, le)}, "decoder_self": {-1: tap(ld, ld)},
                                            "cross": {-1: tap(ld, le)}})


ALL_TERMS = tuple(TERMS)


def _spec(objective="miniend_e", **kw):
    return DistillSpec(objective=objective, relation_heads=R, **kw)


@pytest.mark.parametrize("packed", [False, True])
def test_every_term_equals_numpy_reference(packed):
    rng = np.random.default_rng(0)
    batch = _batch(packed)
    teacher = _random_output(rng, batch, width=48)   # teacher and student widths differ
    student = _random_output(rng, batch, width=24)
    reference = np_terms(teacher, student, batch, temperature=2.0)
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    for objective in ("miniend_e", "miniend_d"):
        spec = _spec(objective, temperature=2.0, weights=(("ground_truth", 0.5),))
        ours = compute_terms(spec, teacher, student, jbatch, denominators(jbatch))
        assert set(ours) == set(objectives.OBJECTIVES[objective]) | {"ground_truth"}
        for name, value in ours.items():
            np.testing.assert_allclose(float(value), reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
            assert float(value) > 0


def test_terms_are_zero_when_student_is_teacher_and_have_finite_gradients():
    config = T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_heads=2, num_encoder_layers=2,
                      num_decoder_layers=2, dropout_rate=0.0)
    params = init_params(config, jax.random.PRNGKey(0))
    batch = {k: jnp.asarray(v) for k, v in _batch(packed=True).items()}
    for objective in objectives.OBJECTIVES:
        if objective == "pretrain":
            continue
        spec = _spec(objective)
        model = T5(config)

        def terms_of(student_params, teacher_params):
            run = lambda p, role: model.apply(
                {"params": p}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                batch["decoder_target_tokens"], batch["encoder_segment_ids"], batch["decoder_segment_ids"],
                taps=spec.taps(role))
            return compute_terms(spec, run(teacher_params, "teacher"), run(student_params, "student"),
                                 batch, denominators(batch))

        same = terms_of(params, params)
        for name, value in same.items():
            assert abs(float(value)) < 1e-6, (objective, name, float(value))
        other = init_params(config, jax.random.PRNGKey(1))
        different = terms_of(other, params)
        assert all(float(v) > 1e-4 for v in different.values()), (objective, different)
        grads = jax.grad(lambda p: total_loss(spec, terms_of(p, params)))(other)
        leaves = jax.tree_util.tree_leaves(grads)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
        assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_interpolation_with_alpha_one_equals_plain_distillation():
    rng = np.random.default_rng(1)
    batch = {k: jnp.asarray(v) for k, v in _batch(packed=False).items()}
    teacher, student = _random_output(rng, batch, 48), _random_output(rng, batch, 24)
    for space in ("probability", "logit"):
        spec = _spec("miniend_d", interpolation=Interpolation(space=space))
        plain = compute_terms(spec, teacher, student, batch, denominators(batch))
        at_one = compute_terms(spec, teacher, student, batch, denominators(batch), alpha=jnp.float32(1.0))
        for name in plain:
            np.testing.assert_allclose(float(at_one[name]), float(plain[name]), rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.8])
def test_interpolated_target_lies_between_student_and_teacher(alpha):
    rng = np.random.default_rng(2)
    t = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(4, 9)) * 3, jnp.float32))
    s = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(4, 9)) * 3, jnp.float32))
    target = relations.interpolate_target(t, s, alpha)
    expected = (1 - alpha) * np.exp(np.asarray(s)) + alpha * np.exp(np.asarray(t))
    np.testing.assert_allclose(np.exp(np.asarray(target)), expected, rtol=1e-5, atol=1e-7)
    # The loss against the target shrinks as it moves towards the student (KL is convex).
    kl = lambda p, q: float(jnp.sum(jnp.exp(p) * (p - q)))
    assert kl(target, s) <= kl(t, s) + 1e-6
    if alpha == 0.0:
        assert kl(target, s) < 1e-6
    # Gradients do not flow into the student side of the target.
    grad = jax.grad(lambda s_: jnp.sum(relations.interpolate_target(t, s_, alpha)))(s)
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_interpolation_schedules():
    a = lambda step, schedule: float(objectives.interpolation_alpha(jnp.int32(step), 0.2, 100, schedule))
    assert a(0, "linear") == pytest.approx(0.2) and a(50, "linear") == pytest.approx(0.6)
    assert a(100, "linear") == a(500, "linear") == pytest.approx(1.0)
    assert a(0, "cosine") == pytest.approx(0.2) and a(50, "cosine") == pytest.approx(0.6)
    assert a(25, "cosine") < a(25, "linear")
    assert a(0, "constant") == 1.0


def test_relation_heads_allow_different_head_counts():
    """Teacher 4 heads x 12, student 2 heads x 12: with R=4 both split into d_r = 12 and 6."""
    rng = np.random.default_rng(3)
    a_t = jnp.asarray(rng.normal(size=(2, 5, 48)), jnp.float32)
    a_s = jnp.asarray(rng.normal(size=(2, 5, 24)), jnp.float32)
    mask = jnp.ones((1, 1, 5, 5), bool)
    lp_t = relations.relation_log_probs(a_t, a_t, mask, 4)
    lp_s = relations.relation_log_probs(a_s, a_s, mask, 4)
    assert lp_t.shape == lp_s.shape == (2, 4, 5, 5)


def test_bad_specs_name_the_field():
    with pytest.raises(ConfigError, match="distill.objective='minilm2' is unknown.*miniend_e"):
        DistillSpec(objective="minilm2")
    with pytest.raises(ConfigError, match="distill.weights has unknown term"):
        DistillSpec(weights=(("cross_attention", 1.0),))
    t = T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_heads=2)
    with pytest.raises(ConfigError, match="relation_heads=32 does not divide the student's attention width"):
        DistillSpec(relation_heads=32).check_models(t, t.replace(num_heads=3))
    with pytest.raises(ConfigError, match="teacher vocab_size=11 != student vocab_size=12"):
        DistillSpec(relation_heads=4).check_models(t, t.replace(vocab_size=12))
    with pytest.raises(ConfigError, match="student_layers.encoder=7 is outside"):
        DistillSpec(relation_heads=4, student_encoder_layer=7).check_models(t, t)


def test_pretrain_weighs_the_ground_truth_one_whatever_the_weights_say():
    spec = DistillSpec(objective="pretrain", weights=(("ground_truth", 0.0), ("logit", 1.0)))
    assert spec.terms == ("ground_truth",) and spec.weight("ground_truth") == 1.0
    assert not spec.needs_teacher
    assert total_loss(spec, {"ground_truth": jnp.float32(2.5)}) == 2.5


def test_the_config_default_weights_are_the_term_tables():
    """configs/base.py's `distill.weights` names every term of `terms.TERMS` with its default weight."""
    from configs import base
    assert base.get_config().distill.weights.to_dict() == {name: term.weight for name, term in TERMS.items()}


def test_a_new_term_is_one_table_row(monkeypatch):
    """A term added as a row (and an objective using it) is computed, tapped, weighted and checked like
    the others: no other edit."""
    from miniend_jax.distill import terms

    def student_logit_norm(c):  # a toy term: mean squared student logit over valid targets
        _, decoder_valid = c.valid
        per_token = jnp.mean(jnp.square(c.student.logits.astype(jnp.float32)), axis=-1)
        return jnp.sum(jnp.where(decoder_valid, per_token, 0.0)) / c.denominator["decoder"]

    monkeypatch.setitem(terms.TERMS, "logit_norm", terms.Term(student_logit_norm, taps=("cross",), teacher=False,
                                                              weight=0.25))
    monkeypatch.setitem(objectives.OBJECTIVES, "norm_only", ("logit_norm",))
    monkeypatch.setattr(objectives, "TERMS", tuple(terms.TERMS))
    spec = _spec("norm_only", student_decoder_layer=-1)
    assert spec.terms == ("logit_norm",) and not spec.needs_teacher and spec.weight("logit_norm") == 0.25
    assert spec.taps("student").cross == (-1,) and spec.taps("student").encoder_self == ()
    rng = np.random.default_rng(1)
    batch = {k: jnp.asarray(v) for k, v in _batch(False).items()}
    student = _random_output(rng, batch, width=24)
    value = compute_terms(spec, None, student, batch, denominators(batch))["logit_norm"]
    valid = np.asarray(batch["decoder_target_tokens"]) > 0
    expected = (np.square(np.asarray(student.logits, np.float64)).mean(-1) * valid).sum() / valid.sum()
    np.testing.assert_allclose(float(value), expected, rtol=valid.size * VOCAB * 2.0 ** -24)  # float32 sums
    assert float(total_loss(spec, {"logit_norm": value})) == pytest.approx(0.25 * float(value))
