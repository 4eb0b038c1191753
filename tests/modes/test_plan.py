"""`mode=plan`: an ahead-of-time compile on simulated devices, checked against a real step's memory."""

import json
import os
import subprocess
import sys

import pytest

from miniend_jax.errors import ConfigError
from miniend_jax.modes import run
from tests.conftest import ROOT, config_with


def _cli(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    return subprocess.run([sys.executable, "-m", "miniend_jax.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory):
    """The plan of tests/configs/plan_small.py on one device (AdamW), and what the command printed."""
    workdir = tmp_path_factory.mktemp("plan_small")
    result = _cli("--config=tests/configs/plan_small.py", f"--workdir={workdir}", "--config.mode=plan")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((workdir / "plan.json").read_text()), result


def test_plan_memory_agrees_with_the_compiled_step_on_this_cpu(small_plan):
    plan, result = small_plan
    assert plan["devices"] == 1 and plan["fits"] and "peak per device" in result.stdout
    assert plan["peak_bytes"] == (plan["argument_bytes"] + plan["output_bytes"] - plan["alias_bytes"]
                                  + plan["temp_bytes"])
    # The compiler's FLOPs agree with the count from the shapes (matmuls only) within 10%.
    assert 0.9 < plan["flops"] / plan["model_flops"] < 1.1, plan

    measured = subprocess.run([sys.executable, "tests/plan_memory_check.py", "plan_small"], cwd=ROOT,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
    assert measured.returncode == 0, measured.stderr[-3000:]
    allocated = json.loads(measured.stdout.strip().splitlines()[-1])["allocated_bytes"]
    assert plan["peak_bytes"] > 300 * 2 ** 20  # large enough that allocator noise is small beside it
    # The state, teacher, batch and new state exist at once: their bytes are exact and must all be allocated.
    # On top come the temporaries (the compiler's own, the same on any x86 CPU to within its kernel choices)
    # and the allocator's overhead (page rounding, arenas): 25% of the peak covers both (measured here 14%).
    exact = plan["argument_bytes"] + plan["output_bytes"] - plan["alias_bytes"]
    assert exact <= allocated <= 1.25 * plan["peak_bytes"], (exact, allocated, plan["peak_bytes"])


def _state_bytes(name: str) -> int:
    """Bytes of the optimizer state of plan_small's student under optimizer `name`, from the shapes."""
    import jax
    import numpy as np
    from miniend_jax import build
    from miniend_jax.models import init_params
    from miniend_jax.train.state import boxed_train_state, make_optimizer
    config = config_with("plan_small", **{"optim.name": name})
    boxed = jax.eval_shape(lambda: init_params(build.student_config(config), jax.random.PRNGKey(0)))
    state = boxed_train_state(boxed, make_optimizer(config.optim, config.train.steps)[0])
    leaves = jax.tree.leaves(state.opt_state)
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)


def test_plan_counts_adafactors_factored_state(small_plan, tmp_path):
    """Adafactor keeps row and column statistics where AdamW keeps two full moments: the plan's arguments
    shrink by exactly the difference of the two states' bytes."""
    result = _cli("--config=tests/configs/plan_small.py", f"--workdir={tmp_path}", "--config.mode=plan",
                  "--config.optim.name=adafactor")
    assert result.returncode == 0, result.stderr[-3000:]
    adafactor, adamw = json.loads((tmp_path / "plan.json").read_text()), small_plan[0]
    saved = _state_bytes("adamw") - _state_bytes("adafactor")
    assert saved > 0.9 * _state_bytes("adamw")  # the student's matrices all factor (dimensions >= 128)
    assert adamw["argument_bytes"] - adafactor["argument_bytes"] == saved
    assert _state_bytes("adamw_scaled") == _state_bytes("adamw")  # the same two moments: the same plan


def test_plan_on_eight_simulated_devices_shards_the_state(tmp_path):
    """Eight devices (simulated by the command itself): per-device arguments shrink with fsdp."""
    common = ["--config=tests/configs/plan_small.py", "--config.mode=plan"]
    one = _cli(*common, f"--workdir={tmp_path / 'one'}")
    eight = _cli(*common, f"--workdir={tmp_path / 'eight'}", "--config.mesh.fsdp=8", "--config.plan.hbm_gib=0.05")
    assert one.returncode == 0 and eight.returncode == 0, (one.stderr[-2000:], eight.stderr[-2000:])
    p1 = json.loads((tmp_path / "one" / "plan.json").read_text())
    p8 = json.loads((tmp_path / "eight" / "plan.json").read_text())
    assert p8["devices"] == 8 and p8["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert p8["argument_bytes"] < p1["argument_bytes"] / 4
    assert p8["flops"] < p1["flops"] / 4
    assert not p8["fits"] and " NO (" in eight.stdout


def test_plan_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="plan.step"):
        run(config_with("plan_small", **{"mode": "plan", "plan.step": "evaluate"}), str(tmp_path))
    with pytest.raises(ConfigError, match="has a -1, so the device count is unknown"):
        run(config_with("plan_small", **{"mode": "plan", "mesh.data": -1}), str(tmp_path))
    with pytest.raises(ConfigError, match="mode=plan needs 8 devices but JAX has 1"):
        run(config_with("plan_small", **{"mode": "plan", "mesh.fsdp": 8}), str(tmp_path))
    assert not os.listdir(tmp_path)


def _planned_by_the_run(changes: dict) -> bool:
    """Whether a row of the distill run's bad-config table applies to its plan: not a change of mode, not a
    mesh sized for other devices (a plan compiles for the mesh's devices), not a path missing here (a plan
    is made before the weights and data are on the machine: such paths are not checked)."""
    return not ({"mode", "mesh.data"} & set(changes)
                or any(isinstance(v, str) and v.startswith("/nonexistent") for v in changes.values()))


from tests.test_main import BAD_CONFIGS  # noqa: E402 - the run's table, checked again below


@pytest.mark.parametrize("changes,message", [row for row in BAD_CONFIGS if _planned_by_the_run(row[0])])
def test_plan_runs_every_check_of_the_mode_it_plans(tmp_path, changes, message):
    """A plan refuses what the run would (train.steps=-5 printed "fits" and wrote plan.json)."""
    config = config_with("tiny", **{"mode": "plan", "plan.step": "distill", "mesh.data": 1, **changes})
    with pytest.raises(ConfigError, match=message):
        run(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_a_plan_does_not_need_the_runs_files(tmp_path):
    """Paths that are not on the planning machine are not checked; the rest is."""
    missing = {"teacher.source": "hf", "teacher.path": "/nonexistent/t5", "data.vocab": "/nonexistent/spiece.model",
               "data.files": "/nonexistent/corpus/*.txt"}
    config = config_with("tiny", **{"mode": "plan", "plan.step": "distill", "mesh.data": 1, **missing})
    result = run(config, str(tmp_path))
    assert result.fits and (tmp_path / "plan.json").exists()


def test_a_plan_reads_nothing_from_storage(tmp_path, monkeypatch):
    """The pod commands' gs:// inputs, planned offline: the storage endpoint is unreachable (a closed port),
    and the plan neither waits for it nor refuses."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", closed)
    cloud = {"teacher.source": "hf", "teacher.path": "gs://bucket/t5", "data.vocab": "gs://bucket/spiece.model",
             "data.files": "gs://bucket/corpus/*.txt"}
    config = config_with("tiny", **{"mode": "plan", "plan.step": "distill", "mesh.data": 1, **cloud})
    result = run(config, str(tmp_path))
    assert result.fits and (tmp_path / "plan.json").exists()
