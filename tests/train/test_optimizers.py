"""The three optimizers against float64 numpy references written from their papers' formulas (not from
optax), over two steps; their state laid out like the parameters; bad settings named before any work."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from miniend_jax import parallel
from miniend_jax.errors import ConfigError
from miniend_jax.train.state import OPTIMIZERS, boxed_train_state, make_optimizer
from tests.conftest import assert_float32_equivalent

LR, TOTAL, CLIP, WD = 1e-2, 10, 2.0, 0.1
# Shapes that exercise every case: a factored matrix, a factored stack of matrices whose two largest
# dimensions are not the last two, an array too small to factor, and a layer-norm scale (no weight decay).
SHAPES = {"kernel": (24, 16), "stacked": (20, 3, 12), "small": (4, 30), "scale": (16,)}
MIN_FACTOR = 8


def _optim(name, momentum=0.0):
    return ml_collections.ConfigDict(dict(
        name=name, learning_rate=LR, weight_decay=WD, warmup_fraction=0.0, warmup_steps=0, decay="linear",
        end_lr_fraction=0.0, clip_norm=CLIP, b1=0.9, b2=0.99, eps=1e-6, min_param_scale=1e-3,
        adafactor=dict(decay_rate=0.8, clipping_threshold=1.0, momentum=momentum,
                       min_dim_size_to_factor=MIN_FACTOR, eps=1e-30)))


def _problem():
    rng = np.random.default_rng(0)
    params = {k: rng.normal(0, 0.5 if k != "scale" else 1.0, s).astype(np.float32) for k, s in SHAPES.items()}
    params["small"] *= 1e-4  # an RMS below min_param_scale: the step is relative to 1e-3 instead
    grads = [{k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(2)]
    return params, grads


# -- float64 references, from the formulas ---------------------------------------------------------------
def _clip_global(g):
    """Global-norm clipping to CLIP (Pascanu et al. 2013)."""
    norm = np.sqrt(sum(np.sum(x ** 2) for x in g.values()))
    return {k: x * min(1.0, CLIP / norm) for k, x in g.items()}


def _rms(x):
    return np.sqrt(np.mean(x ** 2))


def _adam_reference(params, grads, scaled: bool):
    """AdamW (Loshchilov & Hutter 2019, Algorithm 2, bias-corrected moments, decoupled decay scaled by the
    rate); `scaled`: each Adam step multiplied by max(1e-3, RMS(p)) (nanoT5's AdamWScale)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    trajectory = []
    for t, g in enumerate(grads, start=1):
        g = _clip_global({k: x.astype(np.float64) for k, x in g.items()})
        lr = LR * (1 - (t - 1) / TOTAL)
        for k in p:
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v2[k] = 0.99 * v2[k] + 0.01 * g[k] ** 2
            step = (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v2[k] / (1 - 0.99 ** t)) + 1e-6)
            if scaled:
                step = step * max(1e-3, _rms(p[k]))
            decay = WD * p[k] if k != "scale" else 0.0
            p[k] = p[k] - lr * (step + decay)
        trajectory.append({k: x.copy() for k, x in p.items()})
    return trajectory


def _adafactor_reference(params, grads, momentum: float):
    """Adafactor (Shazeer & Stern 2018, Algorithms 4 and 5 with update clipping d = 1, relative step
    max(eps2, RMS(X)) * rho_t with eps2 = 1e-3, decay beta2_t = 1 - t^-0.8, eps1 = 1e-30): arrays whose
    two largest dimensions are >= MIN_FACTOR keep row sums R and column sums C of G^2 + eps1 over those
    two dimensions, V = R C / (1^T R); others keep V itself. Momentum (t5x's beta1) averages the scaled
    steps; weight decay subtracts lr * wd * X."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    R, C, V, M = {}, {}, {}, {k: np.zeros_like(x) for k, x in p.items()}
    trajectory = []
    for t, g in enumerate(grads, start=1):
        g = _clip_global({k: x.astype(np.float64) for k, x in g.items()})
        lr = LR * (1 - (t - 1) / TOTAL)
        beta2 = 1 - t ** -0.8
        for k in p:
            g2 = g[k] ** 2 + 1e-30
            order = np.argsort(g2.shape)
            if g2.ndim >= 2 and g2.shape[order[-2]] >= MIN_FACTOR:
                # [..., rows, cols]: rows the second largest dimension, columns the largest.
                rows, cols = int(order[-2]), int(order[-1])
                moved = np.moveaxis(g2, (rows, cols), (-2, -1))
                R[k] = beta2 * R.get(k, 0) + (1 - beta2) * moved.sum(-1)
                C[k] = beta2 * C.get(k, 0) + (1 - beta2) * moved.sum(-2)
                v = np.moveaxis(R[k][..., :, None] * C[k][..., None, :] / R[k].sum(-1)[..., None, None],
                                (-2, -1), (rows, cols))
            else:
                V[k] = beta2 * V.get(k, 0) + (1 - beta2) * g2
                v = V[k]
            u = g[k] / np.sqrt(v)
            u = u / max(1.0, _rms(u) / 1.0)
            step = lr * max(1e-3, _rms(p[k])) * u
            M[k] = momentum * M[k] + (1 - momentum) * step if momentum else step
            decay = lr * WD * p[k] if k != "scale" else 0.0
            p[k] = p[k] - M[k] - decay
        trajectory.append({k: x.copy() for k, x in p.items()})
    return trajectory


@pytest.mark.parametrize("name,momentum", [("adamw", 0.0), ("adamw_scaled", 0.0), ("adafactor", 0.0),
                                           ("adafactor", 0.9)])
def test_two_steps_equal_the_float64_reference(name, momentum):
    params, grads = _problem()
    optimizer, schedule = make_optimizer(_optim(name, momentum), TOTAL)
    np.testing.assert_allclose([float(schedule(t)) for t in (0, 1, 5)], [LR, LR * 0.9, LR * 0.5], rtol=1e-6)
    if name == "adafactor":
        reference = _adafactor_reference(params, grads, momentum)
    else:
        reference = _adam_reference(params, grads, scaled=name == "adamw_scaled")
    update = jax.jit(optimizer.update)
    p, state = {k: jnp.asarray(v) for k, v in params.items()}, optimizer.init(params)
    for t, g in enumerate(grads):
        before = {k: np.asarray(v, np.float64) for k, v in p.items()}
        updates, state = update(g, state, p)
        p = jax.tree.map(lambda a, b: a + b, p, updates)
        for k in SHAPES:
            # The step itself (new minus old parameters) against the reference's: float32 rounds each of the
            # few dozen operations of one update by at most eps32 / 2.
            expected = reference[t][k] - (reference[t - 1][k] if t else params[k].astype(np.float64))
            assert_float32_equivalent(np.asarray(updates[k], np.float64), expected,
                                      err_msg=f"{name} step {t + 1} {k}")
            assert np.abs(np.asarray(p[k], np.float64) - before[k]).max() > 0


def test_the_relative_step_moves_every_parameter_by_the_same_fraction():
    """What the relative rule is for: on T5's initialisation (embedding std 1, query kernels std
    (d_model * d_kv)^-1/2) AdamW moves the queries by far more, relative to their size, than the
    embedding; adamw_scaled and adafactor by about the same fraction.

    The bounds follow from the scales: AdamW moves each coordinate by about lr per step, so the relative
    movements differ by the ratio of the two stds, 1 / (32 * 16)^-1/2 = 22.6 (asserted > 10); a relative
    step multiplies that by each parameter's RMS, cancelling the ratio up to the sign pattern of three
    random gradients (asserted within a factor of 2)."""
    rng = np.random.default_rng(1)
    params = {"embedding": rng.normal(0, 1.0, (64, 32)).astype(np.float32),
              "query": rng.normal(0, (32 * 16) ** -0.5, (32, 16)).astype(np.float32)}
    moved = {}
    for name in OPTIMIZERS:
        optimizer, _ = make_optimizer(_optim(name), TOTAL)
        p, state = params, optimizer.init(params)
        for _ in range(3):
            g = {k: rng.normal(0, 1, v.shape).astype(np.float32) for k, v in params.items()}
            updates, state = optimizer.update(g, state, p)
            p = jax.tree.map(lambda a, b: a + b, p, updates)
        moved[name] = {k: float(np.linalg.norm(p[k] - params[k]) / np.linalg.norm(params[k])) for k in params}
    assert moved["adamw"]["query"] > 10 * moved["adamw"]["embedding"], moved
    for name in ("adamw_scaled", "adafactor"):
        ratio = moved[name]["query"] / moved[name]["embedding"]
        assert 0.5 < ratio < 2.0, (name, moved)


def test_factored_statistics_are_laid_out_by_their_parameters_axes():
    """Adafactor's row and column statistics take their parameter's logical axes without the reduced
    dimension, so they shard like it on any mesh; Adam's moments take the parameter's axes."""
    boxed = {"kernel": nn.Partitioned(jax.ShapeDtypeStruct((24, 16), jnp.float32), names=("mlp", "embed")),
             "stacked": nn.Partitioned(jax.ShapeDtypeStruct((20, 3, 12), jnp.float32),
                                       names=("vocab", "layers", "embed")),
             "scale": nn.Partitioned(jax.ShapeDtypeStruct((16,), jnp.float32), names=("embed",))}
    optimizer, _ = make_optimizer(_optim("adafactor", momentum=0.9), TOTAL)
    state = boxed_train_state(boxed, optimizer)
    factored = state.opt_state[1]
    names = lambda tree: {k: getattr(v, "names", None) for k, v in tree.items()}
    # The row statistic drops the largest dimension, the column statistic the second largest.
    assert names(factored.v_row) == {"kernel": ("embed",), "stacked": ("layers", "embed"), "scale": (None,)}
    assert names(factored.v_col) == {"kernel": ("mlp",), "stacked": ("vocab", "layers"), "scale": (None,)}
    assert names(factored.v) == {"kernel": (None,), "stacked": (None,), "scale": ("embed",)}
    momentum = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, nn.Partitioned))
                if isinstance(s, nn.Partitioned) and s.value.shape == (24, 16)]
    assert [m.names for m in momentum] == [("mlp", "embed")]
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    shardings = parallel.logical_sharding(state, mesh)  # every name fits its array's rank
    assert jax.tree.structure(nn.unbox(state)) == jax.tree.structure(shardings)
    adam = boxed_train_state(boxed, make_optimizer(_optim("adamw"), TOTAL)[0])
    assert names(adam.opt_state[1][0].mu) == {k: v.names for k, v in boxed.items()}


@pytest.mark.parametrize("change,message", [
    ({"name": "sgd"}, "optim.name='sgd': use one of adamw, adamw_scaled, adafactor"),
    ({"weight_decay": -0.1}, "optim.weight_decay=-0.1"),
    ({"name": "adamw_scaled", "min_param_scale": 0.0}, "optim.min_param_scale=0.0"),
    ({"name": "adafactor", "adafactor.decay_rate": 1.5}, "optim.adafactor.decay_rate=1.5"),
    ({"name": "adafactor", "adafactor.clipping_threshold": 0.5}, "optim.adafactor.clipping_threshold=0.5"),
    ({"name": "adafactor", "adafactor.momentum": 1.0}, "optim.adafactor.momentum=1.0"),
    ({"name": "adafactor", "adafactor.min_dim_size_to_factor": 0}, "optim.adafactor.min_dim_size_to_factor=0"),
    ({"name": "adafactor", "adafactor.eps": 0.0}, "optim.adafactor.eps=0.0"),
])
def test_bad_optimizer_settings_are_config_errors(change, message):
    optim = _optim("adamw")
    for key, value in change.items():
        block, _, field = key.rpartition(".")
        (optim[block] if block else optim)[field] = value
    with pytest.raises(ConfigError, match=message):
        make_optimizer(optim, TOTAL)


def test_adamw_scaled_resumes_bit_for_bit(tmp_path):
    """A run preempted after its step-10 checkpoint (the later checkpoint gone) resumes to the uninterrupted
    run's parameters exactly. (Adafactor: tests/test_main.py kills its runs; AdamW: a damaged checkpoint.)"""
    import os
    import shutil
    from miniend_jax.build import restore_workdir
    from miniend_jax.modes import run
    from tests.conftest import ROOT, config_with
    config = config_with("tiny", **{"mode": "pretrain", "optim.name": "adamw_scaled", "optim.learning_rate": 1e-2,
                                    "train.steps": 20, "train.checkpoint_every": 10, "train.eval_batches": 1,
                                    "train.async_checkpoints": False})
    whole, preempted = tmp_path / "whole", tmp_path / "preempted"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        run(config, str(whole))
        shutil.copytree(whole, preempted)
        for name in ("checkpoints", "input_state"):
            shutil.rmtree(preempted / name / "20")
        run(config, str(preempted))
    finally:
        os.chdir(cwd)
    (_, expected, meta), (_, resumed, resumed_meta) = restore_workdir(str(whole)), restore_workdir(str(preempted))
    assert meta["step"] == resumed_meta["step"] == 20
    jax.tree.map(np.testing.assert_array_equal, resumed, expected)


def test_the_base_configs_optimizer_is_the_pretraining_entry():
    """configs/base.py declares its `optim` fields and `OPTIMIZER_BY_MODE`; `use_optimizer_of` changes
    nothing for distill and pretrain, and gives finetuning AdamW 3e-4."""
    from configs import base
    c = base.get_config()
    assert {k: c.optim[k] for k in base.OPTIMIZER_BY_MODE["pretraining"]} == base.OPTIMIZER_BY_MODE["pretraining"]
    finetune = base.use_optimizer_of(base.get_config(), "finetune").optim
    assert (finetune.name, finetune.learning_rate, finetune.decay) == ("adamw", 3e-4, "constant")
    make_optimizer(finetune, TOTAL)
    make_optimizer(c.optim, TOTAL)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_spares_biases_norms_and_barts_logits_bias(name):
    """BART's parameters (`final_logits_bias`, a constant buffer in HF; biases; layer-norm scales and biases)
    keep their values under weight decay with no gradient, as HF's trainers and fairseq leave them; kernels
    shrink. T5 has only kernels, embeddings and scales, so its decay is unchanged."""
    from miniend_jax.models import get_preset, init_params
    config = get_preset("bart-base", vocab_size=64, d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1, max_position_embeddings=16)
    params = jax.tree.map(lambda x: x + 0.5, nn.unbox(init_params(config, jax.random.PRNGKey(0))))
    optimizer, _ = make_optimizer(_optim(name), TOTAL)
    state = optimizer.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, state, params)
    moved = jax.tree_util.tree_map_with_path(lambda path, u: (path[-1].key, bool(jnp.any(u != 0))), updates)
    flat = jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple))
    assert {key for key, changed in flat if changed} == {"kernel", "embedding", "embed_positions"}
