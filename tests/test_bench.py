"""The benchmark's PyTorch peer computes the project's MiniEnD-E loss (same weights, same batch)."""

import json
import subprocess
import sys

from tests.conftest import ROOT, assert_close_to_float64


def _json_line(args, cwd):
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_peer_first_loss_equals_the_jax_step(tmp_path):
    common = ["--steps=1", "--warmup=1"]
    ours = _json_line(["bench.distill_step", "--role=jax", "--shape=tiny", f"--dir={tmp_path}", "--batch=4",
                       "--length=16", *common], ROOT)
    peer = _json_line(["bench.torch_peer", f"--dir={tmp_path}", "--relation_heads=32", *common], ROOT)
    reference = _json_line(["bench.torch_peer", f"--dir={tmp_path}", "--relation_heads=32", "--float64", *common],
                           ROOT)
    assert ours["framework"] == "jax" and peer["framework"] == "pytorch"
    # As close to the float64 loss as PyTorch's float32 loss is (within 8x): float32 rounding differs by CPU.
    assert_close_to_float64(ours["first_loss"], reference["first_loss"], peer["first_loss"])
    assert ours["first_loss"] > 0.1  # a real loss: logit KD and relations of random models
    assert ours["seconds_per_step"] > 0 and peer["peak_rss_bytes"] > 0
