"""Metrics: a JSONL file, TensorBoard event files and console progress (process 0 only)."""

from __future__ import annotations

import io
import socket
import sys
import time

import jax

from miniend_jax import files
from miniend_jax.jsonl import append_jsonl


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"


class ScalarEventWriter:
    """TensorBoard event files of scalars, written through `miniend_jax.files` (local or object storage).

    Records are TensorBoard's (`Event` protos framed as TFRecords, by the `tensorboard` package's own
    writer); TensorFlow is not needed. An object cannot be appended to, so each flush writes the whole
    current file again; a file is closed at `rotate_bytes` and the next one started (TensorBoard reads a
    directory's event files in name order).
    """

    def __init__(self, directory: str, *, rotate_bytes: int = 4 << 20):
        self.directory, self.rotate_bytes = directory, rotate_bytes
        self._path, self._buffer, self._count = None, io.BytesIO(), 0

    def _record(self, event) -> None:
        from tensorboard.summary.writer.record_writer import RecordWriter
        RecordWriter(self._buffer).write(event.SerializeToString())

    def _start(self) -> None:
        from tensorboard.compat.proto import event_pb2
        self._count += 1
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{self._count}.v2"
        self._path, self._buffer = files.join(self.directory, name), io.BytesIO()
        self._record(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Adds one scalar event per name at `step` (written at the next `flush`)."""
        from tensorboard.compat.proto import event_pb2, summary_pb2
        if self._path is None or self._buffer.tell() > self.rotate_bytes:
            self._start()
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v)
                                             for k, v in values.items()])
        self._record(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        if self._path is not None:
            files.write_bytes(self._path, self._buffer.getvalue())


class MetricsWriter:
    """Appends `{"step": .., name: value}` lines to `metrics.jsonl` and scalars to TensorBoard.

    Writes only on process 0. With `tensorboard`, event files go to `workdir/tensorboard`. `workdir` may
    be local or on object storage.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = files.join(workdir, "metrics.jsonl")
        self._events = ScalarEventWriter(files.join(workdir, "tensorboard")) if self.active and tensorboard else None

    def write(self, step: int, metrics: dict) -> None:
        """Appends one line of `metrics` (each converted with `float`) at `step`, and flushes."""
        if not self.active:
            return
        scalars = {k: float(v) for k, v in metrics.items()}
        append_jsonl(self.path, {"step": step, **scalars})
        if self._events is not None:
            self._events.scalars(step, scalars)
            self._events.flush()

    def close(self) -> None:
        """Nothing is left open (each write flushes): kept for the loop's symmetry."""


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
