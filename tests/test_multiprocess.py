"""Two processes on localhost (jax.distributed, gloo CPU collectives, 4 simulated devices each) run the
same distillation steps as one process with 8 devices; then each run is resumed with the other number
of processes and another mesh (a pod job continued on a different slice), the optimizer's factored
statistics resharded."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax

from miniend_jax.build import restore_workdir
from miniend_jax.checkpoints.state import read_meta
from tests.conftest import ROOT, assert_float32_equivalent

TIME_LIMIT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, num_processes: int, process_id: int, port: int, devices: int, log, steps: int = 4,
           mesh: str = "2,2,2"):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    return subprocess.Popen([sys.executable, "tests/multiprocess_check.py", str(workdir), str(num_processes),
                             str(process_id), str(port), str(steps), mesh], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _run_all(tmp_path, starts) -> dict:
    """Starts `(log name, workdir, processes, process id, devices, steps[, mesh])` at once (one port per workdir),
    waits for all within the time limit (killing what is left), and returns each log's text."""
    ports, procs, logs = {}, [], {}
    try:
        for name, workdir, processes, index, devices, steps, *mesh in starts:
            port = ports.setdefault(workdir, _free_port())
            logs[name] = open(tmp_path / f"{name}.log", "w")
            procs.append(_start(workdir, processes, index, port, devices, logs[name], steps, *mesh))
        deadline = time.monotonic() + TIME_LIMIT_S
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        for p in procs:  # whatever still runs (a timeout, a hung peer) is killed with its children
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for f in logs.values():
            f.close()
    outputs = {name: (tmp_path / f"{name}.log").read_text() for name in logs}
    assert all(p.returncode == 0 for p in procs), {name: text[-3000:] for name, text in outputs.items()}
    return outputs


def _losses(workdir) -> dict:
    with open(workdir / "metrics.jsonl") as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def test_two_processes_equal_one_process_with_eight_devices(tmp_path):
    runs = {"two": tmp_path / "two", "one": tmp_path / "one"}
    outputs = _run_all(tmp_path, [("two_0", runs["two"], 2, 0, 4, 4), ("two_1", runs["two"], 2, 1, 4, 4),
                                  ("one_0", runs["one"], 1, 0, 8, 4)])
    assert "distributed: 2 processes, 8 devices (4 per process)" in outputs["two_0"]
    assert "step 4/4" in outputs["two_0"] and "step 4/4" not in outputs["two_1"]  # process 0 logs

    two, one = _losses(runs["two"]), _losses(runs["one"])
    assert sorted(two) == sorted(one) == [1, 2, 3, 4]
    # gloo's all-reduce sums in another order than one process's: equal to float32 rounding.
    assert_float32_equivalent([two[s] for s in sorted(two)], [one[s] for s in sorted(one)])
    assert len(set(two.values())) == 4  # the steps really trained: every loss differs

    # Both processes wrote one orbax checkpoint together; it holds the single-process parameters.
    assert read_meta(str(runs["two"]))["step"] == 4
    params = {}
    for name, workdir in runs.items():
        _, params[name], _ = restore_workdir(str(workdir))
    jax.tree.map(assert_float32_equivalent, params["two"], params["one"])
    # Decoding over the two processes' devices returns every row to each process, as one process decodes
    # (it failed: a batch-sharded output spans devices a process cannot read).
    decoded = {name: json.loads(text.split("decoded ", 1)[1].splitlines()[0])
               for name, text in outputs.items()}
    assert decoded["two_0"] == decoded["two_1"]
    assert decoded["two_0"]["tokens"] == decoded["one_0"]["tokens"]
    assert_float32_equivalent(decoded["two_0"]["scores"], decoded["one_0"]["scores"])
    # Each process kept its own input-pipeline position.
    assert sorted(os.listdir(runs["two"] / "input_state" / "4")) == ["process_0", "process_1"]

    # Resumed on the other number of processes and another mesh (fsdp 4 where it was 2), to step 8: the
    # state reshards, the input restarts with a warning (a per-host position cannot move to another host
    # count: restoring the two-process iterator in one process failed on its [4, 32] rows), and no
    # checkpoint is set aside.
    resumed = _run_all(tmp_path, [("two_then_one", runs["two"], 1, 0, 8, 8, "1,4,2"),
                                  ("one_then_two_0", runs["one"], 2, 0, 4, 8, "1,4,2"),
                                  ("one_then_two_1", runs["one"], 2, 1, 4, 8, "1,4,2")])
    for name, before, after in (("two_then_one", 2, 1), ("one_then_two_0", 1, 2)):
        assert "resumed from checkpoint at step 4" in resumed[name], resumed[name][-2000:]
        assert f"checkpoint step 4 was written by {before} process(es), this run has {after}" in resumed[name]
    for workdir in runs.values():
        assert sorted(_losses(workdir)) == list(range(1, 9))
        assert not [n for n in os.listdir(workdir / "checkpoints") if "unreadable" in n]
        assert read_meta(str(workdir))["step"] == 8
    # Both continued from equal states on equal batches: the resharded optimizer state carried over.
    two, one = _losses(runs["two"]), _losses(runs["one"])
    assert_float32_equivalent([two[s] for s in range(5, 9)], [one[s] for s in range(5, 9)])
    for name, workdir in runs.items():
        _, params[name], _ = restore_workdir(str(workdir))
    jax.tree.map(assert_float32_equivalent, params["two"], params["one"])
