"""`python -m miniend_jax.diagnose`: movement from the run's own initialisation per parameter group, and
attention entropy against cases whose answer is known (uniform attention has entropy log(keys))."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from miniend_jax import diagnose
from miniend_jax.errors import ConfigError
from miniend_jax.models import T5Config, init_params
from miniend_jax.modes import run
from tests.conftest import ROOT, config_with

CONFIG = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_heads=2, num_encoder_layers=2,
                  num_decoder_layers=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                  scale_decoder_outputs=False, dropout_rate=0.0)


def _params(config=CONFIG, seed=0):
    return jax.tree.map(np.asarray, nn.unbox(init_params(config, jax.random.PRNGKey(seed))))


@pytest.mark.parametrize("tied", [True, False])
def test_every_parameter_has_a_group(tied):
    config = CONFIG.replace(tie_word_embeddings=tied, feed_forward_proj="relu" if tied else "gated-gelu")
    paths = [tuple(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(_params(config))[0]]
    groups = {diagnose.parameter_group(p) for p in paths}
    assert groups == set(diagnose.GROUPS) - ({"head"} if tied else set())


def test_movement_is_the_relative_change_of_each_group():
    initial = _params()
    trained = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 1.5 if path[-2].key == "query" else x + 0.0, initial)
    trained["token_embedder"]["embedding"] = initial["token_embedder"]["embedding"] * 0.9
    movement = diagnose.relative_movement(initial, trained)
    np.testing.assert_allclose(movement["query"], 0.5, rtol=1e-6)  # float32 products
    np.testing.assert_allclose(movement["embedding"], 0.1, rtol=1e-6)
    assert all(movement[g] == 0.0 for g in movement if g not in ("query", "embedding"))


def test_attention_entropy_of_uniform_and_of_sharp_attention():
    params = _params()
    tokens = np.array([[5, 9, 12, 7, 1, 0], [3, 4, 1, 0, 0, 0]], np.int32)
    decoder = np.concatenate([np.zeros((2, 1), np.int32), tokens[:, :-1]], axis=1)
    # No query and no position bias: every distribution is uniform over its keys, entropy = log(keys).
    flat = jax.tree_util.tree_map_with_path(
        lambda path, x: np.zeros_like(x) if path[-2].key in ("query", "relpos_bias") or path[-1].key == "rel_embedding"
        else x, params)
    uniform = diagnose.attention_entropy(CONFIG, flat, tokens, decoder)
    # Valid keys of each valid query: the decoder reads [0, 5, 9, 12, 7, 1] and [0, 3, 4, 1, 0, 0] (the
    # start token 0 is a real position).
    keys = {"encoder_self": np.mean(np.log([5] * 5 + [3] * 3)),
            "cross": np.mean(np.log([5] * 6 + [3] * 4)),
            "decoder_self": np.mean(np.log([1, 2, 3, 4, 5, 6] + [1, 2, 3, 4]))}  # causal
    for kind, expected in keys.items():
        np.testing.assert_allclose(uniform[kind]["entropy"], expected, rtol=1e-6, err_msg=kind)
        np.testing.assert_allclose(uniform[kind]["uniform"], expected, rtol=1e-6, err_msg=kind)
    # Scaled-up queries sharpen every distribution: entropy falls well below uniform.
    sharp = jax.tree_util.tree_map_with_path(lambda path, x: x * 300.0 if path[-2].key == "query" else x, params)
    result = diagnose.attention_entropy(CONFIG, sharp, tokens, decoder)
    for kind in keys:
        assert result[kind]["entropy"] < 0.5 * keys[kind], (kind, result[kind])


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    """One pretraining step at a negligible rate: the parameters are still the run's initialisation."""
    workdir = tmp_path_factory.mktemp("diagnose") / "run"
    config = config_with("tiny", **{"mode": "pretrain", "seed": 3, "train.steps": 1, "train.checkpoint_every": 1,
                                    "optim.learning_rate": 1e-12, "train.eval_batches": 1})
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        run(config, str(workdir))
    finally:
        os.chdir(cwd)
    return workdir


def test_the_command_measures_from_the_runs_own_initialisation(one_step_run, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\nA second line of held-out text.\n")
    result = subprocess.run([sys.executable, "-m", "miniend_jax.diagnose", f"--workdir={one_step_run}",
                             f"--text={text}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((one_step_run / "diagnosis.json").read_text())
    assert report["step"] == 1 and report["examples"] == 2 and "| query |" in result.stdout
    # Rebuilt from the seed in config.json: another seed's parameters would be ~1.4 away.
    assert max(report["movement"].values()) < 1e-6, report["movement"]
    for kind in diagnose.STACKS:
        entropy = report["attention_entropy"]
        assert entropy["initial"][kind] == pytest.approx(entropy["trained"][kind], rel=1e-5)
        assert 0 < entropy["initial"][kind]["entropy"] <= entropy["initial"][kind]["uniform"] + 1e-9


def test_bad_input_is_one_line(one_step_run, tmp_path):
    with pytest.raises(ConfigError, match="holds no config.json"):
        diagnose.diagnose(str(tmp_path))
    with pytest.raises(ConfigError, match="not plain text files; give --text"):
        diagnose.diagnose(str(one_step_run))  # the tiny config's corpus is WikiExtractor .gz
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="holds no text"):
        diagnose.diagnose(str(one_step_run), text=str(tmp_path / "empty.txt"))
