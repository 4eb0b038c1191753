"""Benchmark of the distillation step (teacher forward + student forward/backward + AdamW update) against
the PyTorch peer (bench/torch_peer.py), with the machine's float32 matmul rate as the practical peak.

Command (from the repository root; about 15 minutes on 2 CPU cores):
  .venv/bin/python -m bench.distill_step
Options: --shapes small,base  --batch 16  --length 128  --steps 5  --rounds 2  --out workdirs/bench

Each measurement runs in its own process (so that peak memory is that framework's alone), JAX and
PyTorch alternating for `--rounds` rounds; the best round of each is reported. Both start from the same
weights (written by the JAX process as HF checkpoints) and the same batch, and the first step's losses
are compared, so the two compute the same objective. Shapes, objective (MiniEnD-E: logit KD + decoder
and encoder last-layer self-attention relations, 32 relation heads), optimizer (AdamW 3e-4, weight decay
0.01 except layer norms, clip 5.0) and float32 are the same on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SHAPES = {
    # A t5-small-shaped teacher into a 4-layer, 256-wide student.
    "small": dict(teacher="t5-small", student="t5-small",
                  student_overrides=dict(d_model=256, num_heads=4, d_kv=64, d_ff=1024, num_encoder_layers=4,
                                         num_decoder_layers=4)),
    # A t5-base-shaped teacher into the paper's 6L/384H student.
    "base": dict(teacher="t5-base", student="miniend-6l-384h", student_overrides={}),
    # A smoke shape for the test suite (tests/test_bench.py): seconds, not a measurement.
    "tiny": dict(teacher="t5-small", teacher_overrides=dict(vocab_size=512, d_model=64, num_heads=2, d_kv=32,
                                                            d_ff=128, num_encoder_layers=2, num_decoder_layers=2),
                 student="t5-small", student_overrides=dict(vocab_size=512, d_model=64, num_heads=2, d_kv=32,
                                                            d_ff=96, num_encoder_layers=1, num_decoder_layers=1)),
}
RELATION_HEADS = 32


# ---------------------------------------------------------------------------------------------
# Matmul rate
# ---------------------------------------------------------------------------------------------
def matmul_rate(framework: str, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` float32 `n x n @ n x n` rate in FLOP/s."""
    if framework == "jax":
        import jax
        import jax.numpy as jnp
        x = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        f = jax.jit(lambda a: a @ a)
        f(x).block_until_ready()
        run = lambda: f(x).block_until_ready()
    else:
        import torch
        x = torch.randn(n, n)
        torch.mm(x, x)
        run = lambda: torch.mm(x, x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


# ---------------------------------------------------------------------------------------------
# The JAX step, built by the project as a run builds it
# ---------------------------------------------------------------------------------------------
def bench_config(shape: str, batch: int, length: int):
    from configs import base
    spec = SHAPES[shape]
    c = base.get_config()
    c.mode = "distill"
    c.teacher.source, c.teacher.preset = "preset", spec["teacher"]
    c.teacher.overrides.update(spec.get("teacher_overrides", {}))
    c.student.preset = spec["student"]
    c.student.overrides.update(spec["student_overrides"])
    c.distill.objective = "miniend_e"
    c.distill.relation_heads = RELATION_HEADS
    c.optim.learning_rate, c.optim.weight_decay, c.optim.clip_norm = 3e-4, 0.01, 5.0
    c.optim.warmup_steps, c.optim.decay = 0, "constant"
    c.data.inputs_length, c.data.targets_length, c.data.pack = length, length, False
    c.train.batch_size = batch
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    return c


def make_batch(vocab_size: int, batch: int, length: int) -> dict:
    """Full-length sequences (as packed pretraining batches nearly are), fixed seed."""
    rng = np.random.default_rng(0)
    enc = rng.integers(2, vocab_size - 100, (batch, length)).astype(np.int32)  # no sentinel ids
    target = rng.integers(2, vocab_size - 100, (batch, length)).astype(np.int32)
    dec_in = np.concatenate([np.zeros((batch, 1), np.int32), target[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": target}


def run_jax(shape: str, directory: str, batch: int, length: int, steps: int, warmup: int) -> dict:
    import flax.linen as nn
    import jax
    from miniend_jax import build
    from miniend_jax import parallel, rss
    from miniend_jax.checkpoints.hf import save_hf_checkpoint
    from miniend_jax.models.registry import init_params
    from miniend_jax.train import flops
    from miniend_jax.train.loop import Models, step_layout
    from miniend_jax.train.state import TrainState

    config = bench_config(shape, batch, length)
    student, teacher = build.student_config(config), build.teacher_config(config)
    models = Models(spec=build.distill_spec(config), student_config=student, teacher_config=teacher)
    mesh = parallel.make_mesh(1, 1, 1)
    layout = step_layout(build.train_settings(config), models, mesh, parallel.DEFAULT_RULES)
    teacher_params = nn.unbox(init_params(teacher, jax.random.PRNGKey(1)))
    student_params = nn.unbox(init_params(student, jax.random.PRNGKey(2)))
    host_batch = make_batch(student.vocab_size, batch, length)
    if not os.path.exists(os.path.join(directory, "batch.npz")):  # the peer starts from the same point
        save_hf_checkpoint(os.path.join(directory, "teacher"), teacher, jax.device_get(teacher_params))
        save_hf_checkpoint(os.path.join(directory, "student"), student, jax.device_get(student_params))
        np.savez(os.path.join(directory, "batch.npz"), **host_batch)
    device_batch = {k: jax.numpy.asarray(v) for k, v in host_batch.items()}
    device_batch["decoder_loss_weights"] = (device_batch["decoder_target_tokens"] > 0).astype(np.int32)
    with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.DEFAULT_RULES):
        step = layout.jit()
        state = TrainState.create(student_params, layout.optimizer)
        compiled = step.lower(state, teacher_params, device_batch).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        state, metrics = compiled(state, teacher_params, device_batch)
        first_loss = float(metrics["loss"])
        for _ in range(warmup - 1):
            state, metrics = compiled(state, teacher_params, device_batch)
        jax.block_until_ready(state)
        rss.reset_peak()
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, teacher_params, device_batch)
        jax.block_until_ready((state, metrics))
        seconds = (time.perf_counter() - start) / steps
    model_flops = flops.train_flops(student, batch, length, length) + flops.forward_flops(teacher, batch, length,
                                                                                          length)
    return {"framework": "jax", "first_loss": first_loss, "seconds_per_step": seconds,
            "peak_rss_bytes": rss.peak_bytes(), "compiled_flops": float(cost.get("flops", 0.0)),
            "model_flops": model_flops, "versions": f"jax {jax.__version__}"}


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
def _child(args: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.distill_step", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args}: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _peer(directory: str, steps: int, warmup: int) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.torch_peer", f"--dir={directory}", f"--steps={steps}",
                             f"--warmup={warmup}", f"--relation_heads={RELATION_HEADS}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"torch peer: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def drive(args) -> dict:
    os.makedirs(args.out, exist_ok=True)
    report = {"command": " ".join(sys.argv), "batch": args.batch, "length": args.length, "steps": args.steps,
              "cores": os.cpu_count(), "matmul": {}, "shapes": {}}
    for framework in ("jax", "torch"):
        report["matmul"][framework] = _child(["--role", f"matmul-{framework}"])["flops_per_second"]
        print(f"float32 matmul 2048^3, {framework}: {report['matmul'][framework] / 1e9:.0f} GFLOP/s", flush=True)
    tokens = args.batch * 2 * args.length
    for shape in args.shapes.split(","):
        directory = os.path.join(args.out, shape)
        os.makedirs(directory, exist_ok=True)
        rounds = []
        for _ in range(args.rounds):
            jax_run = _child(["--role", "jax", "--shape", shape, "--dir", directory, "--batch", str(args.batch),
                              "--length", str(args.length), "--steps", str(args.steps), "--warmup", str(args.warmup)])
            torch_run = _peer(directory, args.steps, args.warmup)
            rounds.append({"jax": jax_run, "pytorch": torch_run})
            print(f"{shape}: jax {jax_run['seconds_per_step']:.2f} s/step, pytorch "
                  f"{torch_run['seconds_per_step']:.2f} s/step (first losses {jax_run['first_loss']:.5f} / "
                  f"{torch_run['first_loss']:.5f})", flush=True)
        best = {fw: min((r[fw] for r in rounds), key=lambda x: x["seconds_per_step"]) for fw in ("jax", "pytorch")}
        model_flops = best["jax"]["model_flops"]
        peak = max(report["matmul"].values())
        summary = {}
        for fw, run in best.items():
            seconds = run["seconds_per_step"]
            summary[fw] = {"seconds_per_step": seconds, "tokens_per_second": tokens / seconds,
                           "model_flops_per_second": model_flops / seconds,
                           "fraction_of_matmul_peak": model_flops / seconds / peak,
                           "peak_rss_gib": run["peak_rss_bytes"] / 2 ** 30, "first_loss": run["first_loss"]}
        summary["jax"]["compiled_flops"] = best["jax"]["compiled_flops"]
        summary["speedup"] = summary["jax"]["tokens_per_second"] / summary["pytorch"]["tokens_per_second"]
        summary["loss_relative_difference"] = abs(best["jax"]["first_loss"] - best["pytorch"]["first_loss"]) / abs(
            best["pytorch"]["first_loss"])
        summary["model_flops_per_step"] = model_flops
        summary["rounds"] = rounds
        report["shapes"][shape] = summary
    report["versions"] = [best["jax"]["versions"], best["pytorch"]["versions"]]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(markdown(report), flush=True)
    return report


def markdown(report: dict) -> str:
    peak = max(report["matmul"].values())
    lines = [f"float32 matmul (2048^3, best of 5): JAX {report['matmul']['jax'] / 1e9:.0f} GFLOP/s, PyTorch "
             f"{report['matmul']['torch'] / 1e9:.0f} GFLOP/s; practical peak {peak / 1e9:.0f} GFLOP/s", "",
             "| shape | framework | s/step | tokens/s | model GFLOP/s | of matmul peak | peak RSS | first loss |",
             "|---|---|---|---|---|---|---|---|"]
    for shape, s in report["shapes"].items():
        for fw in ("jax", "pytorch"):
            r = s[fw]
            lines.append(f"| {shape} | {fw} | {r['seconds_per_step']:.2f} | {r['tokens_per_second']:.0f} | "
                         f"{r['model_flops_per_second'] / 1e9:.0f} | {100 * r['fraction_of_matmul_peak']:.0f}% | "
                         f"{r['peak_rss_gib']:.2f} GiB | {r['first_loss']:.5f} |")
        lines.append(f"| {shape} | **JAX / PyTorch** | | **{s['speedup']:.2f}x** | | | | "
                     f"rel. diff {s['loss_relative_difference']:.1e} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="drive", choices=["drive", "jax", "matmul-jax", "matmul-torch"])
    parser.add_argument("--shapes", default="small,base")
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument("--dir", default="")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="workdirs/bench")
    args = parser.parse_args()
    if args.role == "drive":
        drive(args)
    elif args.role == "jax":
        print(json.dumps(run_jax(args.shape, args.dir, args.batch, args.length, args.steps, args.warmup)))
    else:
        print(json.dumps({"flops_per_second": matmul_rate(args.role.split("-")[1])}))


if __name__ == "__main__":
    main()
