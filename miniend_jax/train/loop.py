"""The training loop for `distill` and `pretrain`: sharded state, input, the jitted step, checkpoints.

Order matters for a user's time: everything that can be wrong with the input (config values, paths,
model shapes, data) is checked by the caller before this loop compiles anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import signal
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from miniend_jax import parallel
from miniend_jax.checkpoints.state import StateCheckpointer
from miniend_jax.distill.objectives import DistillSpec
from miniend_jax.errors import ConfigError, EvaluationInterrupted, TrainingError
from miniend_jax.models import registry
from miniend_jax.models.registry import abstract_params, init_params
from miniend_jax.train import flops
from miniend_jax.train.metrics import MetricsWriter, Progress
from miniend_jax.train.settings import TrainSettings
from miniend_jax.train.state import TrainState, boxed_train_state, make_optimizer
from miniend_jax.train.step import make_eval_step, make_train_step

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Models:
    """What the loop trains and distils from. `teacher_params` are host arrays (or None)."""

    spec: DistillSpec
    student_config: Any                # a model config of any family (`models/registry.py`)
    teacher_config: Any = None
    teacher_params: Any = None
    student_init: Callable[[Any], Any] | None = None   # unboxed abstract params -> host params (copy init)


@dataclasses.dataclass
class Data:
    """Iterables of numpy batches (global-batch / process_count rows each) and feature lengths."""

    train: Any                      # a tf.data iterator (checkpointable) yielding dicts of tensors
    make_eval: Callable[[], Any] | None
    inputs_length: int
    targets_length: int
    inputs: dict | None = None      # what the input position refers to (`train.resume.input_record`)


def _to_global(batch: dict, mesh, global_batch: int) -> dict:
    """Process-local numpy rows -> global arrays sharded over (data, fsdp)."""
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        sharding = parallel.batch_sharding(mesh, value.ndim)
        out[name] = jax.make_array_from_process_local_data(sharding, value, (global_batch,) + value.shape[1:])
    return out


def _numpy_batch(batch) -> dict:
    return {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in batch.items()
            if not k.endswith("_positions")}


@dataclasses.dataclass
class StepLayout:
    """The train step of a config and where its arguments live: all a compile needs, no arrays."""

    step_fn: Callable                 # (state, teacher_params, batch) -> (state, metrics)
    optimizer: Any
    schedule: Callable
    student: nn.Module                # the student's Flax module (`registry.module`)
    teacher: nn.Module | None
    state_shardings: Any
    abstract_state: Any               # unboxed ShapeDtypeStructs of the TrainState
    teacher_shardings: Any
    abstract_teacher: Any             # unboxed ShapeDtypeStructs of the teacher's params (or None)

    def jit(self):
        return jax.jit(self.step_fn, in_shardings=(self.state_shardings, self.teacher_shardings, None),
                       out_shardings=(self.state_shardings, None), donate_argnums=(0,))


def step_layout(settings: TrainSettings, models: Models, mesh, rules) -> StepLayout:
    """Builds the train step of `settings` (`build.train_settings`) and the shardings of its state and
    teacher over `mesh` under the axis `rules`."""
    optimizer, schedule = make_optimizer(settings.optim, settings.steps)
    student = registry.module(models.student_config)
    teacher = registry.module(models.teacher_config) if models.spec.needs_teacher else None
    step_fn = make_train_step(models.spec, student, teacher, optimizer, schedule, microbatches=settings.microbatches,
                              dropout_seed=settings.seed, nan_loss_at_step=settings.nan_loss_at_step)
    boxed_state = boxed_train_state(abstract_params(models.student_config), optimizer)
    teacher_shardings = abstract_teacher = None
    if teacher is not None:
        teacher_boxed = abstract_params(models.teacher_config)
        teacher_shardings = parallel.logical_sharding(teacher_boxed, mesh, rules)
        abstract_teacher = nn.unbox(teacher_boxed)
    return StepLayout(step_fn, optimizer, schedule, student, teacher,
                      parallel.logical_sharding(boxed_state, mesh, rules), nn.unbox(boxed_state),
                      teacher_shardings, abstract_teacher)


def _raise_unless_unreadable(error: Exception, step: int) -> None:
    """Re-raises a restore failure that the run's environment or configuration caused (memory, a state of
    another structure), so that only a checkpoint whose own files cannot be read is set aside."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, (MemoryError, KeyboardInterrupt)) or "RESOURCE_EXHAUSTED" in text:
        raise error
    if any(word in text.lower() for word in ("tree structure", "structures do not match", "mismatch")):
        raise ConfigError(f"checkpoint step {step} holds a train state of another structure than this run's "
                          f"({text[:300]}); settings that change the optimizer or the parameter tree (e.g. "
                          "optim.clip_norm between 0 and > 0, model layout) cannot change on resume: restore "
                          "them, or use a new --workdir.") from error


def _least_everywhere(count: int) -> int:
    """The smallest of each process's `count` (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return count
    from jax.experimental import multihost_utils
    return int(np.min(multihost_utils.process_allgather(np.asarray(count, np.int32))))


def _everywhere(flag: bool) -> bool:
    """Whether `flag` holds on every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


class Trainer:
    """`on_evaluate(trainer, params, step) -> {name: value}` runs with each held-out evaluation (finetuning
    decodes and scores the validation set there); its values are logged with the losses."""

    def __init__(self, settings: TrainSettings, workdir: str, models: Models, data: Data, mesh, on_evaluate=None,
                 restore_inputs: bool = True):
        """`settings`: `build.train_settings(config)`. `restore_inputs`: whether a resumed run restores its
        checkpoint's input position (False when the inputs changed under `data.on_input_change='restart'`,
        see `train/resume.py`)."""
        self.settings, self.workdir, self.models, self.data, self.mesh = settings, workdir, models, data, mesh
        self.on_evaluate, self.restore_inputs = on_evaluate, restore_inputs
        self.meta = {"train_steps": settings.steps, "inputs": data.inputs}
        self._stop = None           # the run's `_StopRequests`, while it runs
        self._pending_evaluation = False
        self.stopped = False        # whether `run` ended on a stop request (SIGTERM / SIGINT)
        self.rules = settings.axis_rules
        train = settings
        layout = step_layout(settings, models, mesh, self.rules)
        self.optimizer, self.schedule = layout.optimizer, layout.schedule
        self.student, self.teacher = layout.student, layout.teacher
        self.state_shardings, self.abstract_state = layout.state_shardings, layout.abstract_state
        self.teacher_shardings = layout.teacher_shardings
        self.train_step = layout.jit()
        self.eval_step = jax.jit(make_eval_step(models.spec, self.student, self.teacher),
                                 in_shardings=(self.state_shardings.params, self.teacher_shardings, None))
        self.checkpointer = StateCheckpointer(workdir, save_every=train.checkpoint_every,
                                              keep=train.keep_checkpoints, async_save=train.async_checkpoints)
        self.writer = MetricsWriter(workdir)
        b = train.batch_size
        self.student_flops = flops.train_flops(models.student_config, b, data.inputs_length, data.targets_length)
        self.teacher_flops = (flops.forward_flops(models.teacher_config, b, data.inputs_length, data.targets_length)
                              if self.teacher is not None else 0.0)
        self.tokens_per_step = b * (data.inputs_length + data.targets_length)

    @contextlib.contextmanager
    def _context(self):
        """Mesh and logical axis rules, active while tracing and running the step."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def initial_state(self) -> TrainState:
        """A fresh state, created directly in its sharded layout."""
        models = self.models
        rng = jax.random.PRNGKey(self.settings.seed)
        with self._context():
            if models.student_init is None:
                params = jax.jit(lambda r: nn.unbox(init_params(models.student_config, r)),
                                 out_shardings=self.state_shardings.params)(rng)
            else:
                params = jax.device_put(models.student_init(self.abstract_state.params), self.state_shardings.params)
            create = jax.jit(lambda p: TrainState.create(p, self.optimizer), out_shardings=self.state_shardings)
            return create(params)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainState:
        train, models = self.settings, self.models
        total = train.steps
        teacher_params = (jax.device_put(models.teacher_params, self.teacher_shardings)
                          if self.teacher is not None else None)
        state = self._restore_or_init()
        step = int(state.step)
        progress = Progress(total, step)
        window_start, window_steps = time.time(), 0
        consecutive_skips, pending_skip = 0, None
        with self._context(), _StopRequests() as stop:
            self._stop = stop
            if self._pending_evaluation and step < total:  # stopped during this step's evaluation: run it again
                if not self._evaluate_or_stop(state, teacher_params, step):
                    return state
            while step < total:
                batch = _to_global(_numpy_batch(next(self.data.train)), self.mesh, train.batch_size)
                state, metrics = self.train_step(state, teacher_params, batch)
                step += 1
                window_steps += 1
                # Read the previous step's skip flag: the device keeps a step in flight meanwhile.
                if pending_skip is not None:
                    consecutive_skips = self._check_skip(*pending_skip, consecutive_skips)
                pending_skip = (step, metrics["skipped"])
                if step % train.log_every == 0 or step == total:
                    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    elapsed = time.time() - window_start
                    metrics.update(self._rates(window_steps, elapsed))
                    self.writer.write(step, metrics)
                    progress.print(step, metrics)
                    window_start, window_steps = time.time(), 0
                if train.eval_every and step % train.eval_every == 0 and step < total:
                    if not self._evaluate_or_stop(state, teacher_params, step):
                        return state
                if stop.requested():
                    self.stopped = True
                    self.checkpointer.save(state, models.student_config, input_iterator=self.data.train, force=True,
                                           meta=self.meta)
                    self.checkpointer.close()
                    print(f"stopped by signal {stop.signal_name} at step {step}; checkpoint written", flush=True)
                    self.writer.close()
                    return state
                self.checkpointer.save(state, models.student_config, input_iterator=self.data.train,
                                       force=step == total, meta=self.meta)
            if pending_skip is not None:
                self._check_skip(*pending_skip, consecutive_skips)
            if not self._evaluate_or_stop(state, teacher_params, step):  # its checkpoint is written already
                return state
        self.checkpointer.close()
        self.writer.close()
        return state

    def stop_requested(self) -> bool:
        """Whether a stop was requested (on any process: a collective while the loop runs)."""
        return self._stop is not None and self._stop.requested()

    def _evaluate_or_stop(self, state, teacher_params, step: int) -> bool:
        """Runs the evaluation of `step`; when a stop request interrupts it, writes the step's checkpoint
        marked so that the evaluation runs again on resume, and returns False (the loop then ends)."""
        try:
            self.evaluate(state, teacher_params, step)
            return True
        except EvaluationInterrupted as interrupted:
            self.stopped = True
            self.checkpointer.save(state, self.models.student_config, input_iterator=self.data.train, force=True,
                                   meta={**self.meta, "evaluation_pending": True})
            self.checkpointer.close()
            self.writer.close()
            print(f"stopped by signal {self._stop.signal_name} during the evaluation at step {step} ({interrupted}); "
                  "checkpoint written, the evaluation runs again on resume", flush=True)
            return False

    def _restore_or_init(self) -> TrainState:
        """The newest readable checkpoint, or a fresh state.

        A checkpoint is set aside (renamed `<step>.unreadable-<time>`, with a warning) only when its own
        files cannot be read on some process; every process takes the same decision. A checkpoint of a
        model the run's config does not describe stops the run with a `ConfigError` and is left alone.
        """
        for step in sorted(self.checkpointer.steps(), reverse=True):
            error = None
            try:
                self.checkpointer.check_model(step, self.models.student_config)
                state = self.checkpointer.restore(step, self.abstract_state, self.state_shardings,
                                                  input_iterator=self.data.train if self.restore_inputs else None)
            except ConfigError:
                raise
            except Exception as caught:  # noqa: BLE001 - classified below
                _raise_unless_unreadable(caught, step)
                error = caught
            if _everywhere(error is None):
                self._pending_evaluation = bool(self.checkpointer.restored_meta.get("evaluation_pending"))
                print(f"resumed from checkpoint at step {step}"
                      + (" (its interrupted evaluation runs first)" if self._pending_evaluation else ""), flush=True)
                return state
            moved = self.checkpointer.set_aside(step)
            reason = f"{type(error).__name__}: {str(error)[:200]}" if error else "unreadable on another process"
            message = (f"warning: checkpoint at step {step} is unreadable ({reason}); moved to {moved}, trying "
                       "the one before")
            log.warning(message)
            print(message, flush=True)
        return self.initial_state()

    def _check_skip(self, step: int, skipped, consecutive: int) -> int:
        if float(skipped) == 0.0:
            return 0
        consecutive += 1
        print(f"warning: step {step}: non-finite loss or gradient, update skipped ({consecutive} in a row)",
              flush=True)
        limit = self.settings.max_consecutive_nonfinite
        if consecutive >= limit:
            self.checkpointer.close()
            raise TrainingError(
                f"{consecutive} consecutive steps up to step {step} had a non-finite loss or gradient "
                f"(train.max_consecutive_nonfinite={limit}); the last good checkpoint is step "
                f"{self.checkpointer.latest_step()}. Lower optim.learning_rate, check the data, or raise the limit.")
        return consecutive

    def _rates(self, steps: int, seconds: float) -> dict:
        seconds = max(seconds, 1e-9)
        return {"steps_per_second": steps / seconds,
                "tokens_per_second": steps * self.tokens_per_step / seconds,
                "student_tflops": steps * self.student_flops / seconds / 1e12,
                "teacher_tflops": steps * self.teacher_flops / seconds / 1e12}

    def evaluate(self, state, teacher_params, step: int) -> dict:
        """Held-out metrics over `eval_batches` validation batches (weighted by target tokens), and those
        of `on_evaluate`."""
        sums, counts = {}, {}
        batches = self.data.make_eval() if self.data.make_eval is not None else ()
        local = list(itertools.islice(batches, self.settings.eval_batches))
        # Each host reads its own validation shard, which may hold fewer batches than another's; the step
        # is a collective, so every host runs it the same number of times: the smallest count.
        local = local[:_least_everywhere(len(local))]
        for done, batch in enumerate(local):
            if self.stop_requested():
                raise EvaluationInterrupted(done, len(local))
            batch = _to_global(_numpy_batch(batch), self.mesh, self.settings.batch_size)
            for name, (total, count) in jax.device_get(self.eval_step(state.params, teacher_params, batch)).items():
                sums[name] = sums.get(name, 0.0) + float(total)
                counts[name] = counts.get(name, 0.0) + float(count)
        metrics = {name: sums[name] / max(counts[name], 1.0) for name in sums}
        if self.on_evaluate is not None:
            with self._context():
                metrics.update(self.on_evaluate(self, state.params, step))
        if metrics:
            self.writer.write(step, metrics)
            if jax.process_index() == 0:
                print(f"eval at step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())),
                      flush=True)
        return metrics


class _StopRequests:
    """SIGTERM / SIGINT (e.g. a TPU preemption notice) ask the loop to checkpoint and stop after the
    current step, or during an evaluation after its current batch (a preempted TPU VM has about 30 s).
    With several processes, all stop at the same step: each step they agree on whether
    any of them was signalled."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be handled here
                pass
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def requested(self) -> bool:
        local = self.signal_name is not None
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils
        return bool(np.any(multihost_utils.process_allgather(np.array(local))))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
