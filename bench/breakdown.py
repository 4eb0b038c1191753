"""Where the step's time goes, per framework: the teacher's forward, the student's forward + backward,
and the rest of the step (relations, logit KD, clipping, AdamW) as the difference to the whole step.

Command (after bench/distill_step.py has written the shape's checkpoints and batch):
  .venv/bin/python -m bench.breakdown --shape base
Each framework runs in its own process, one after the other; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _time(fn, repeats: int) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def jax_parts(shape: str, directory: str, repeats: int) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from bench.distill_step import bench_config
    from miniend_jax import build
    from miniend_jax.checkpoints.hf import load_hf_checkpoint
    from miniend_jax.models.interface import Taps
    from miniend_jax.models.registry import module
    from miniend_jax.train.loop import Models, step_layout
    from miniend_jax.train.state import TrainState
    from miniend_jax import parallel

    batch = {k: jnp.asarray(v) for k, v in np.load(os.path.join(directory, "batch.npz")).items()}
    config = bench_config(shape, batch["encoder_input_tokens"].shape[0], batch["encoder_input_tokens"].shape[1])
    teacher, teacher_params = load_hf_checkpoint(os.path.join(directory, "teacher"))
    student, student_params = load_hf_checkpoint(os.path.join(directory, "student"))
    teacher_params, student_params = jax.device_put((teacher_params, student_params))  # not re-sent per call
    taps = Taps(encoder_self=(-1,), decoder_self=(-1,))
    args = (batch["encoder_input_tokens"], batch["decoder_input_tokens"], batch["decoder_target_tokens"])

    teacher_fwd = jax.jit(lambda p: module(teacher).apply({"params": p}, *args, taps=taps))

    def student_loss(p):
        out = module(student).apply({"params": p}, *args, taps=taps)
        return jnp.mean(jax.nn.log_softmax(out.logits)) + sum(jnp.mean(x) for k in out.taps.values()
                                                            for t in k.values() for x in t)
    student_fb = jax.jit(jax.grad(student_loss))
    models = Models(spec=build.distill_spec(config), student_config=student, teacher_config=teacher)
    mesh = parallel.make_mesh(1, 1, 1)
    layout = step_layout(build.train_settings(config), models, mesh, parallel.DEFAULT_RULES)
    batch["decoder_loss_weights"] = (batch["decoder_target_tokens"] > 0).astype(jnp.int32)
    with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.DEFAULT_RULES):
        step = layout.jit()
        state = [TrainState.create(student_params, layout.optimizer)]

        def full():
            state[0], metrics = step(state[0], teacher_params, batch)
            jax.block_until_ready(metrics)
        return {"teacher forward": _time(lambda: jax.block_until_ready(teacher_fwd(teacher_params)), repeats),
                "student forward + backward": _time(lambda: jax.block_until_ready(student_fb(student_params)),
                                                    repeats),
                "whole step": _time(full, repeats)}


def torch_parts(directory: str, repeats: int) -> dict:
    import torch
    import transformers
    from bench import torch_peer
    teacher = transformers.T5ForConditionalGeneration.from_pretrained(f"{directory}/teacher").eval()
    student = transformers.T5ForConditionalGeneration.from_pretrained(f"{directory}/student").train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    batch = {k: torch.from_numpy(v).long() for k, v in np.load(f"{directory}/batch.npz").items()}
    inputs = dict(input_ids=batch["encoder_input_tokens"], decoder_input_ids=batch["decoder_input_tokens"])
    teacher_taps, student_taps = torch_peer.QKVTaps(teacher), torch_peer.QKVTaps(student)
    optimizer = torch_peer.make_optimizer(student, lr=3e-4, weight_decay=0.01)

    def teacher_forward():
        with torch.no_grad():
            teacher(**inputs)

    def student_fb():
        student.zero_grad(set_to_none=True)
        out = student(**inputs)
        loss = torch.log_softmax(out.logits, -1).mean() + sum(v.mean() for v in student_taps.outputs.values())
        loss.backward()

    def full():
        optimizer.zero_grad(set_to_none=True)
        loss = torch_peer.miniend_e_loss(teacher, student, teacher_taps, student_taps, batch, 32)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        optimizer.step()
    return {"teacher forward": _time(teacher_forward, repeats),
            "student forward + backward": _time(student_fb, repeats), "whole step": _time(full, repeats)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="base")
    parser.add_argument("--out", default="workdirs/bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--framework", default="")
    args = parser.parse_args()
    directory = os.path.join(args.out, args.shape)
    if args.framework == "jax":
        print(json.dumps(jax_parts(args.shape, directory, args.repeats)))
        return
    if args.framework == "pytorch":
        print(json.dumps(torch_parts(directory, args.repeats)))
        return
    parts = {}
    for framework in ("jax", "pytorch"):
        result = subprocess.run([sys.executable, "-m", "bench.breakdown", f"--shape={args.shape}",
                                 f"--out={args.out}", f"--repeats={args.repeats}", f"--framework={framework}"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        parts[framework] = json.loads(result.stdout.strip().splitlines()[-1])
    for p in parts.values():
        p["rest (relations, logit KD, clip, AdamW)"] = (p["whole step"] - p["teacher forward"]
                                                        - p["student forward + backward"])
    print(f"| {args.shape} shape, seconds | JAX | PyTorch | PyTorch / JAX |\n|---|---|---|---|")
    for name in ("teacher forward", "student forward + backward", "rest (relations, logit KD, clip, AdamW)",
                 "whole step"):
        j, t = parts["jax"][name], parts["pytorch"][name]
        print(f"| {name} | {j:.2f} | {t:.2f} | {t / j:.2f}x |")


if __name__ == "__main__":
    main()
