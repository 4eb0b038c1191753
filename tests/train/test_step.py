"""The train step: microbatched accumulation equals one large batch; the teacher gets no update."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from miniend_jax.distill.objectives import DistillSpec
from miniend_jax.models import T5, T5Config, init_params
from miniend_jax.train.state import TrainState, make_optimizer
from miniend_jax.train.step import make_train_step
from tests.conftest import FLOAT32_EPS, adam_update_tolerance, assert_float32_equivalent

TEACHER = T5Config(vocab_size=50, d_model=32, d_kv=16, d_ff=64, num_heads=2, num_encoder_layers=2,
                   num_decoder_layers=2, dropout_rate=0.0)
STUDENT = TEACHER.replace(d_model=16, d_kv=8, d_ff=32, num_encoder_layers=1, num_decoder_layers=1)


def _optim():
    return ml_collections.ConfigDict(dict(learning_rate=1e-2, weight_decay=0.01, warmup_fraction=0.0, warmup_steps=2,
                                          decay="linear", end_lr_fraction=0.0, clip_norm=1.0, b1=0.9, b2=0.99,
                                          eps=1e-3))  # well conditioned: see tests/conftest.py adam_update_tolerance


def _assert_params_close(actual, expected, steps: int):
    """Parameters after `steps` updates of `_optim()` from two float32 computations of the same gradients."""
    atol = adam_update_tolerance(1e-2, 1e-3, clip_norm=1.0, steps=steps)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=64 * FLOAT32_EPS, atol=atol), actual, expected)


def _batch(rng, size=8, le=12, ld=7):
    enc = rng.integers(2, 50, (size, le))
    dec_t = rng.integers(2, 50, (size, ld))
    for i in range(size):  # ragged padding, different per row
        enc[i, rng.integers(3, le):] = 0
        dec_t[i, rng.integers(2, ld):] = 0
    dec_in = np.concatenate([np.zeros((size, 1), int), dec_t[:, :-1]], 1)
    return {"encoder_input_tokens": jnp.asarray(enc), "decoder_target_tokens": jnp.asarray(dec_t),
            "decoder_input_tokens": jnp.asarray(dec_in), "decoder_loss_weights": jnp.asarray(dec_t > 0)}


def test_gradient_accumulation_equals_one_big_batch():
    spec = DistillSpec(objective="miniend_d", relation_heads=4, weights=(("ground_truth", 0.5),))
    optimizer, schedule = make_optimizer(_optim(), total_steps=10)
    teacher_params = nn.unbox(init_params(TEACHER, jax.random.PRNGKey(0)))
    state = TrainState.create(nn.unbox(init_params(STUDENT, jax.random.PRNGKey(1))), optimizer)
    batch = _batch(np.random.default_rng(0))
    results = {}
    for k in (1, 4):
        step = jax.jit(make_train_step(spec, T5(STUDENT), T5(TEACHER), optimizer, schedule, microbatches=k))
        s = state
        for _ in range(2):
            s, metrics = step(s, teacher_params, batch)
        results[k] = (s, metrics)
    (s1, m1), (s4, m4) = results[1], results[4]
    for name in ("loss", "loss/logit", "loss/cross", "loss/decoder_self", "loss/ground_truth", "grad_norm"):
        assert_float32_equivalent(m4[name], m1[name], err_msg=name)
    _assert_params_close(s4.params, s1.params, steps=2)
    assert int(s4.step) == 2
    # The update moved the student.
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), s1.params, state.params)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3


def test_encoder_and_decoder_gradient_norms_are_reported_separately():
    spec = DistillSpec(objective="l_imp", relation_heads=4)
    optimizer, schedule = make_optimizer(_optim(), total_steps=10)
    teacher_params = nn.unbox(init_params(TEACHER, jax.random.PRNGKey(0)))
    state = TrainState.create(nn.unbox(init_params(STUDENT, jax.random.PRNGKey(1))), optimizer)
    step = jax.jit(make_train_step(spec, T5(STUDENT), T5(TEACHER), optimizer, schedule))
    _, metrics = step(state, teacher_params, _batch(np.random.default_rng(1)))
    assert {k for k in metrics if k.startswith("grad_norm/")} == {
        "grad_norm/encoder", "grad_norm/decoder", "grad_norm/token_embedder"}  # the parameter tree's keys
    enc, dec, emb, total = (float(metrics[k]) for k in ("grad_norm/encoder", "grad_norm/decoder",
                                                         "grad_norm/token_embedder", "grad_norm"))
    assert enc > 0 and dec > 0
    np.testing.assert_allclose(total ** 2, enc ** 2 + dec ** 2 + emb ** 2, rtol=1e-4)


def test_nan_loss_skips_the_update_and_is_reported():
    spec = DistillSpec(objective="miniend_e", relation_heads=4)
    optimizer, schedule = make_optimizer(_optim(), total_steps=10)
    teacher_params = nn.unbox(init_params(TEACHER, jax.random.PRNGKey(0)))
    state = TrainState.create(nn.unbox(init_params(STUDENT, jax.random.PRNGKey(1))), optimizer)
    step = jax.jit(make_train_step(spec, T5(STUDENT), T5(TEACHER), optimizer, schedule, nan_loss_at_step=2))
    batch = _batch(np.random.default_rng(2))
    after1, m1 = step(state, teacher_params, batch)
    after2, m2 = step(after1, teacher_params, batch)
    after3, m3 = step(after2, teacher_params, batch)
    assert float(m1["skipped"]) == 0 and float(m2["skipped"]) == 1 and float(m3["skipped"]) == 0
    assert np.isnan(float(m2["loss"]))
    jax.tree.map(np.testing.assert_array_equal, after2.params, after1.params)
    jax.tree.map(np.testing.assert_array_equal, after2.opt_state, after1.opt_state)
    assert int(after2.step) == 2
    changed = jax.tree_util.tree_leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), after3.params, after2.params))
    assert any(changed)


def test_scanned_layers_train_like_unrolled_layers():
    """Three steps with both models scanned equal the unrolled ones: same relations, gradients, and
    optimizer (weight decay skips the layer-norm scales in either layout)."""
    from miniend_jax.models.common import stack_layers, unstack_layers
    spec = DistillSpec(objective="miniend_e", relation_heads=4, weights=(("ground_truth", 0.5),))
    optim = _optim()
    optim.weight_decay = 0.5  # large, so that decaying a scale by mistake shows
    optimizer, schedule = make_optimizer(optim, total_steps=10)
    teacher_params = nn.unbox(init_params(TEACHER, jax.random.PRNGKey(0)))
    student_params = nn.unbox(init_params(STUDENT.replace(num_encoder_layers=2), jax.random.PRNGKey(1)))
    batch = _batch(np.random.default_rng(0))
    results = {}
    for scan in (False, True):
        student, teacher = STUDENT.replace(num_encoder_layers=2, scan_layers=scan), TEACHER.replace(scan_layers=scan)
        layout = stack_layers if scan else unstack_layers
        s = TrainState.create(layout(student_params), optimizer)
        step = jax.jit(make_train_step(spec, T5(student), T5(teacher), optimizer, schedule))
        for _ in range(3):
            s, metrics = step(s, layout(teacher_params), batch)
        results[scan] = (unstack_layers(s.params), metrics)
    (loop, m_loop), (scanned, m_scan) = results[False], results[True]
    for name in ("loss", "loss/encoder_self", "loss/decoder_self", "grad_norm/encoder", "grad_norm/decoder"):
        assert_float32_equivalent(m_scan[name], m_loop[name], err_msg=name)
    _assert_params_close(scanned, loop, steps=3)
