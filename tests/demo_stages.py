"""A stand-in for the demo's training runs (tests/test_demo.py), in a module of its own: the demo's worker
processes import it by name, and it imports nothing heavy (no TensorFlow), so they start in a second."""

import json
import os
import time


def fake_run(workdir, config):
    """A stand-in for a training run, in a worker process: records when it ran, and reaches its last step
    unless its workdir is named `stops_early` (as a run stopped by SIGTERM after checkpointing)."""
    from miniend_jax import demo
    start = time.time()
    time.sleep(0.3)
    os.makedirs(workdir, exist_ok=True)
    step = 4 if workdir.endswith("stops_early") else config.train.steps
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, "eval/ground_truth": 4.0}) + "\n")
    with open(os.path.join(workdir, "times.json"), "w") as f:
        json.dump([start, time.time()], f)
    return demo._done(workdir, config)
