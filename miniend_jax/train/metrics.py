"""Metrics: a JSONL file, TensorBoard event files and console progress (process 0 only)."""

from __future__ import annotations

import os
import sys
import time

import jax

from miniend_jax.jsonl import append_jsonl


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"


class MetricsWriter:
    """Appends `{"step": .., name: value}` lines to `metrics.jsonl` and scalars to TensorBoard.

    Writes only on process 0. `workdir` must exist; with `tensorboard`, event files go to
    `workdir/tensorboard` (imports TensorFlow).
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._summary = None
        if self.active and tensorboard:
            import tensorflow as tf  # the loop already runs a tf.data pipeline
            self._tf = tf
            self._summary = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        """Appends one line of `metrics` (each converted with `float`) at `step`, and flushes."""
        if not self.active:
            return
        scalars = {k: float(v) for k, v in metrics.items()}
        append_jsonl(self.path, {"step": step, **scalars})
        if self._summary is not None:
            with self._summary.as_default():
                for name, value in scalars.items():
                    self._tf.summary.scalar(name, value, step=step)
            self._summary.flush()

    def close(self) -> None:
        """Closes the TensorBoard writer (the JSONL file is opened per write)."""
        if self._summary is not None:
            self._summary.close()


class Progress:
    """Console lines with rate and ETA (printed on process 0 only)."""

    def __init__(self, total_steps: int, start_step: int):
        self.total, self.start = total_steps, start_step
        self.t0 = time.time()
        self.active = jax.process_index() == 0

    def line(self, step: int, metrics: dict) -> str:
        """One progress line; `metrics` needs `loss` and `learning_rate` (`loss/*`, `tokens_per_second`,
        `student_tflops`, `teacher_tflops` are shown when present). Durations are wall-clock h:mm:ss."""
        elapsed = time.time() - self.t0
        done = max(step - self.start, 1)
        eta = elapsed / done * (self.total - step)
        terms = " ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in metrics.items() if k.startswith("loss/"))
        teacher = metrics.get("teacher_tflops", 0)  # 0 without a teacher (pretrain, finetune): not shown
        text = (f"step {step}/{self.total} | loss {metrics['loss']:.4f} ({terms}) | "
                f"lr {metrics['learning_rate']:.2e} | {metrics.get('tokens_per_second', 0) / 1e3:.1f}k tok/s | "
                f"student {metrics.get('student_tflops', 0):.3f} TFLOP/s"
                + (f" teacher {teacher:.3f}" if teacher else "")
                + f" | elapsed {_format_duration(elapsed)} ETA {_format_duration(eta)}")
        return text

    def print(self, step: int, metrics: dict) -> None:
        """Prints `line(step, metrics)` on process 0."""
        if self.active:
            print(self.line(step, metrics), flush=True)
            sys.stdout.flush()
