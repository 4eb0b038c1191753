"""Sharded steps equal the single-device step (8 simulated CPU devices, in a subprocess)."""

import json
import os
import subprocess
import sys

import pytest

from miniend_jax import parallel
from miniend_jax.errors import ConfigError
from tests.conftest import FLOAT32_EPS, ROOT, update_tolerance


# Every mesh kind without remat and layer scan; with both, the mesh that uses all three axes at once.
# Scanned and unrolled steps are equal on one device (tests/train/test_step.py), and so are all remat
# policies (tests/models/test_t5.py): what only a sharded scan can get wrong is how the stacked layer
# parameters are split, which (2, 2, 2) exercises on every axis. Adafactor's factored statistics are not
# shaped like their parameters: checked on the scanned stacks over both meshes that shard fsdp and tensor;
# the relative step of adamw_scaled reduces over a sharded parameter.
@pytest.mark.parametrize("remat,layers,optimizer,meshes", [
    ("none", "loop", "adamw", ["8,1,1", "2,2,2", "1,4,2", "1,1,8"]),
    ("full", "scan", "adamw", ["2,2,2"]),
    ("full", "scan", "adafactor", ["2,2,2", "1,4,2"]),
    ("none", "loop", "adamw_scaled", ["2,2,2"]),
])
def test_sharded_step_equals_single_device(remat, layers, optimizer, meshes):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "tests/sharded_step_check.py", remat, layers, optimizer, *meshes],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {f"({m.replace(',', ', ')})" for m in meshes}
    # A sharded reduction sums in another order, so float32 rounding (eps 1.2e-7) differs by a few ulps per
    # layer: the loss within 64 ulps of itself, the parameters within what that does to one update
    # (7.6e-5 for AdamW at lr 1e-2, eps 1e-3; a fault such as a missing all-reduce moves an update by about
    # lr times the parameter's scale).
    tolerance = update_tolerance(optimizer, 1e-2, 1e-2 if optimizer == "adafactor" else 1e-3, clip_norm=1.0)
    for shape, r in report.items():
        assert r["loss_diff"] < 64 * FLOAT32_EPS, (shape, r)
        assert r["param_diff"] < tolerance + 64 * FLOAT32_EPS, (shape, r)
    # FFN kernels ("embed", "mlp") are split over fsdp x tensor where those axes exist, and so are their
    # optimizer statistics: Adam's moments like the kernel, Adafactor's row statistic (the kernel without
    # its "mlp" dimension) over fsdp.
    for shape in set(report) & {"(2, 2, 2)", "(1, 4, 2)"}:
        assert report[shape]["devices"] == 8 and "fsdp" in report[shape]["spec"], report[shape]
        assert "fsdp" in report[shape]["state"][1], report[shape]
    for shape in set(report) & {"(2, 2, 2)", "(1, 1, 8)"}:
        assert "tensor" in report[shape]["spec"], report[shape]
        assert ("tensor" in report[shape]["state"][1]) == (optimizer != "adafactor"), report[shape]


def test_mesh_shape_resolution_and_errors():
    assert parallel.mesh_shape(-1, 2, 1, 8) == (4, 2, 1)
    assert parallel.mesh_shape(2, 2, 2, 8) == (2, 2, 2)
    with pytest.raises(ConfigError, match="cannot be split"):
        parallel.mesh_shape(-1, 3, 1, 8)
    with pytest.raises(ConfigError, match="data\\*fsdp\\*tensor = 4 but there are 8 devices"):
        parallel.mesh_shape(2, 2, 1, 8)
    with pytest.raises(ConfigError, match="at most one -1"):
        parallel.mesh_shape(-1, -1, 1, 8)


def test_every_process_needs_batch_shards_of_its_own():
    """Each process feeds distinct rows of the global batch, so data*fsdp must be a multiple of the process
    count; (1, 1, 4) over 2 processes passed every check and crashed at the first checkpoint."""
    from miniend_jax.config_checks import validate_layout
    from tests.conftest import config_with
    mesh = lambda d, f, t: config_with("tiny", **{"mesh.data": d, "mesh.fsdp": f, "mesh.tensor": t})
    with pytest.raises(ConfigError, match=r"data\*fsdp=1 shard\(s\) over 2 processes.*mesh.tensor=2 mesh.fsdp=2"):
        validate_layout(mesh(1, 1, 4), 2, 4)
    with pytest.raises(ConfigError, match=r"data\*fsdp=2 shard\(s\) over 4 processes"):
        validate_layout(mesh(2, 1, 4), 4, 8)
    assert validate_layout(mesh(1, 2, 2), 2, 4) == (1, 2, 2)    # the suggested fix
    assert validate_layout(mesh(2, 2, 2), 2, 8) == (2, 2, 2)
    assert validate_layout(mesh(1, 1, 4), 1, 4) == (1, 1, 4)    # one process feeds the whole batch


def test_distributed_settings_are_checked_before_joining():
    from miniend_jax.parallel import initialize_distributed
    from tests.conftest import config_with
    base = {"distributed.enabled": True, "distributed.coordinator_address": "127.0.0.1:1"}
    with pytest.raises(ConfigError, match=r"distributed.process_id=2: must lie in \[0, 2\)"):
        initialize_distributed(config_with("tiny", **base, **{"distributed.num_processes": 2,
                                                              "distributed.process_id": 2}))
    with pytest.raises(ConfigError, match="distributed.num_processes=0"):
        initialize_distributed(config_with("tiny", **base, **{"distributed.num_processes": 0}))
    initialize_distributed(config_with("tiny"))  # disabled: nothing happens
    import jax
    assert not jax.distributed.is_initialized()


def test_logical_axis_rules_are_configurable_per_run():
    import jax
    from miniend_jax.models import T5Config, abstract_params
    rules = parallel.rules_from_config({"embed": "", "mlp": "fsdp,tensor", "batch": "data"})
    as_dict = dict(rules)
    assert as_dict["embed"] is None and as_dict["mlp"] == ("fsdp", "tensor") and as_dict["batch"] == "data"
    assert as_dict["vocab"] == "tensor"  # untouched rules keep their defaults
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    boxed = abstract_params(T5Config(vocab_size=32, d_model=8, d_kv=4, num_heads=2, d_ff=16, num_encoder_layers=1,
                                     num_decoder_layers=1))
    kernel = parallel.logical_sharding(boxed, mesh, rules)["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert kernel.spec == jax.sharding.PartitionSpec(None, ("fsdp", "tensor"))
    # The base config spells out the defaults (so each can be overridden from the command line).
    from tests.conftest import config_with
    assert parallel.rules_from_config(config_with("tiny").mesh.rules) == parallel.DEFAULT_RULES
    with pytest.raises(ConfigError, match="mesh.rules.heads: not a logical axis"):
        parallel.rules_from_config({"heads": "tensor"})
    with pytest.raises(ConfigError, match="'model' is not a mesh axis"):
        parallel.rules_from_config({"embed": "model"})
