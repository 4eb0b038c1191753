"""Model behaviour that has no PyTorch counterpart: dtypes, dropout, axis names, taps, imports."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from miniend_jax.errors import ConfigError
from miniend_jax.models import T5, T5Config, Taps, get_preset, init_params
from miniend_jax.models.common import stack_layers, unstack_layers
from tests.conftest import assert_float32_equivalent, padded_batch

TINY = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_encoder_layers=2,
            num_decoder_layers=2, dropout_rate=0.1)


def _forward(config, params, **kwargs):
    enc, dec, _ = padded_batch(config.vocab_size)
    return T5(config).apply({"params": params}, enc, dec, **kwargs)


def test_every_parameter_has_logical_axis_names():
    for preset in ("t5-small", "t5-v1_1-small"):
        config = get_preset(preset, vocab_size=96, num_encoder_layers=1, num_decoder_layers=1)
        params = init_params(config, jax.random.PRNGKey(0))
        leaves = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
        assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
        assert all(len(x.names) == x.value.ndim for x in leaves)
        names = {n for x in leaves for n in x.names}
        assert names == {"vocab", "embed", "joined_kv", "mlp", "relpos_heads", "relpos_buckets"}


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config32 = T5Config(**TINY)
    params = nn.unbox(init_params(config32, jax.random.PRNGKey(0)))
    config16 = config32.replace(dtype="bfloat16")
    out32 = _forward(config32, params)
    out16 = _forward(config16, params, taps=Taps(encoder_self=(0,)))
    assert out16.logits.dtype == jnp.float32
    assert out16.taps["encoder_self"][0].q.dtype == jnp.bfloat16
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    # bfloat16 has ~3 significant digits: close, not equal.
    scale = float(jnp.abs(out32.logits).max())
    assert float(jnp.abs(out16.logits - out32.logits).max()) < 0.05 * scale
    assert float(jnp.abs(out16.logits - out32.logits).max()) > 0


def test_dropout_is_random_only_when_enabled():
    config = T5Config(**TINY)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    a = _forward(config, params).logits
    b = _forward(config, params).logits
    np.testing.assert_array_equal(a, b)
    rng1, rng2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    d1 = _forward(config, params, enable_dropout=True, rngs={"dropout": rng1}).logits
    d1_again = _forward(config, params, enable_dropout=True, rngs={"dropout": rng1}).logits
    d2 = _forward(config, params, enable_dropout=True, rngs={"dropout": rng2}).logits
    np.testing.assert_array_equal(d1, d1_again)
    assert not np.allclose(d1, a) and not np.allclose(d1, d2)


def test_taps_out_of_range_are_rejected():
    config = T5Config(**TINY)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match=r"tap cross\[2\] is outside the 2 layers"):
        _forward(config, params, taps=Taps(cross=(2,)))


def test_without_taps_nothing_is_returned():
    config = T5Config(**TINY)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    out = _forward(config, params)
    assert out.taps == {"encoder_self": {}, "decoder_self": {}, "cross": {}}


@pytest.mark.parametrize("field,value,message", [
    ("d_model", 0, "model.d_model=0: must be a positive integer"),
    ("feed_forward_proj", "gated", "model.feed_forward_proj='gated'"),
    ("dtype", "float8", "model.dtype='float8'"),
    ("dropout_rate", 1.0, r"model.dropout_rate=1.0: must be in \[0, 1\)"),
    ("eos_token_id", 500, "outside the vocabulary"),
])
def test_config_validation(field, value, message):
    with pytest.raises(ConfigError, match=message):
        T5Config(**{**TINY, field: value})


def test_model_and_checkpoint_imports_do_not_load_tensorflow():
    code = ("import sys\n"
            "import miniend_jax.models, miniend_jax.checkpoints, miniend_jax.checkpoints.hf\n"
            "import miniend_jax.checkpoints.tokenizer, miniend_jax.evaluation.decoding\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'seqio', 'torch'))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_the_same_loss_and_gradients(remat):
    config = T5Config(**{**TINY, "dropout_rate": 0.0})
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    enc, dec, targets = padded_batch(config.vocab_size)

    def loss(p, cfg):
        logits = T5(cfg).apply({"params": p}, enc, dec, targets).logits
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0])

    plain = jax.value_and_grad(loss)(params, config)
    rematted = jax.value_and_grad(loss)(params, config.replace(remat=remat))
    assert_float32_equivalent(rematted[0], plain[0])
    jax.tree.map(assert_float32_equivalent, rematted[1], plain[1])


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_scanned_layers_equal_unrolled_layers(remat):
    """One `nn.scan` per stack computes the loop's logits, taps and gradients; the layouts convert
    into each other exactly."""
    config = T5Config(**{**TINY, "num_encoder_layers": 3, "dropout_rate": 0.0, "remat": remat})
    scanned_config = config.replace(scan_layers=True)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    boxed = init_params(scanned_config, jax.random.PRNGKey(0))
    kernel = boxed["encoder"]["layers"]["mlp"]["wi"]["kernel"]
    assert kernel.names == ("layers", "embed", "mlp") and kernel.value.shape == (3, 32, 64)
    stacked = stack_layers(params)
    assert jax.tree.map(np.shape, stacked) == jax.tree.map(np.shape, nn.unbox(boxed))
    jax.tree.map(np.testing.assert_array_equal, unstack_layers(stacked), params)

    enc, dec, targets = padded_batch(config.vocab_size)
    taps = Taps(encoder_self=(0, -1), decoder_self=(-1,), cross=(0, 1))

    def loss(p, cfg):
        out = T5(cfg).apply({"params": p}, enc, dec, targets, taps=taps)
        tap_terms = sum(jnp.mean(x ** 2) for kind in out.taps.values() for tap in kind.values() for x in tap)
        return jnp.mean(out.logits ** 2) + tap_terms, out

    (plain_loss, plain), plain_grads = jax.value_and_grad(loss, has_aux=True)(params, config)
    (scan_loss, scanned), scan_grads = jax.value_and_grad(loss, has_aux=True)(stacked, scanned_config)
    assert jax.tree.structure(plain) == jax.tree.structure(scanned)
    jax.tree.map(assert_float32_equivalent, scanned, plain)
    assert_float32_equivalent(scan_loss, plain_loss)
    jax.tree.map(assert_float32_equivalent, unstack_layers(scan_grads), plain_grads)
