"""Train-state checkpoints: orbax, asynchronous, keep the last N, resume from the newest.

Each step directory holds `params` and `opt_state` (separate items, so a finished run's student can be
restored as a teacher without its optimizer) and `meta` (step, model config). The tf.data iterator
position of each process is written beside it, under `input_state/<step>/process_<i>`, before the
asynchronous save begins, so a restored step always has the input position that produced it.
The teacher is never written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from miniend_jax.models.config import T5Config

CHECKPOINT_DIR = "checkpoints"
INPUT_STATE_DIR = "input_state"


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class StateCheckpointer:
    """Saves and restores `TrainState`s of one run directory."""

    def __init__(self, workdir: str, *, save_every: int, keep: int, async_save: bool = True):
        self.workdir = os.path.abspath(workdir)
        self.save_every = save_every
        self.manager = ocp.CheckpointManager(
            os.path.join(self.workdir, CHECKPOINT_DIR),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                 create=True),
            item_names=("params", "opt_state", "meta"))

    # -- saving --------------------------------------------------------------------------------
    def save(self, state, model_config: T5Config, *, input_iterator=None, force: bool = False) -> bool:
        """Saves `state` if its step is due (or `force`); returns whether a save started."""
        step = int(state.step)
        if not (force or step % self.save_every == 0) or step in self.manager.all_steps():
            return False
        if input_iterator is not None:
            self._save_input_state(step, input_iterator)
        meta = {"step": step, "model": dataclasses.asdict(model_config)}
        saved = self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params), opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(meta)), force=True)
        self._prune_input_states()
        return saved

    def _input_dir(self, step: int) -> str:
        return os.path.join(self.workdir, INPUT_STATE_DIR, str(step), f"process_{jax.process_index()}")

    def _save_input_state(self, step: int, iterator) -> None:
        import tensorflow as tf
        directory = self._input_dir(step)
        tf.train.Checkpoint(iterator=iterator).write(os.path.join(directory, "iterator"))

    def _prune_input_states(self) -> None:
        root = os.path.join(self.workdir, INPUT_STATE_DIR)
        if jax.process_index() != 0 or not os.path.isdir(root):
            return
        keep = {str(s) for s in self.manager.all_steps()}
        newest = max((int(n) for n in os.listdir(root) if n.isdigit()), default=None)
        for name in os.listdir(root):
            # The newest input state may belong to a save still in flight: never remove it.
            if name.isdigit() and name not in keep and int(name) != newest:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # -- restoring -----------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints (a save cut off mid-write is never listed)."""
        return list(self.manager.all_steps())

    def set_aside(self, step: int) -> str:
        """Renames an unreadable checkpoint out of the manager's view; returns its new path."""
        source = os.path.join(self.workdir, CHECKPOINT_DIR, str(step))
        target = f"{source}.unreadable-{int(time.time())}"
        if jax.process_index() == 0 and os.path.exists(source):
            os.rename(source, target)
        self.manager.reload()
        return target

    def restore(self, step: int, abstract_state, state_shardings, *, input_iterator=None):
        """The `TrainState` at `step`, placed with `state_shardings`; restores the iterator in place."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(abstract_state.params, state_shardings.params)),
            opt_state=ocp.args.StandardRestore(_abstract(abstract_state.opt_state, state_shardings.opt_state)),
            meta=ocp.args.JsonRestore()))
        if input_iterator is not None:
            self._restore_input_state(step, input_iterator)
        step_array = jax.device_put(jax.numpy.asarray(restored.meta["step"], jax.numpy.int32),
                                    state_shardings.step)
        return abstract_state.replace(step=step_array, params=restored.params, opt_state=restored.opt_state)

    def _restore_input_state(self, step: int, iterator) -> None:
        import tensorflow as tf
        path = os.path.join(self._input_dir(step), "iterator")
        if not tf.io.gfile.glob(path + "*"):
            raise FileNotFoundError(f"checkpoint step {step} has no input-pipeline state at {path}; the "
                                    "data position cannot be restored.")
        tf.train.Checkpoint(iterator=iterator).read(path).assert_consumed()


def restore_params(workdir: str, abstract_params, shardings=None, step: int | None = None) -> tuple[Any, dict]:
    """Only the parameters (and meta) of a run's newest (or given) checkpoint, e.g. to use as a teacher."""
    manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
                                    item_names=("params", "opt_state", "meta"))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir} holds no checkpoint")
    target = abstract_params if shardings is None else _abstract(abstract_params, shardings)
    restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target),
                                                             meta=ocp.args.JsonRestore()))
    manager.close()
    return restored.params, restored.meta


def read_meta(workdir: str, step: int | None = None) -> dict:
    """The `meta` item (step, model config) of a run's newest checkpoint, without reading arrays."""
    manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
                                    item_names=("params", "opt_state", "meta"))
    step = manager.latest_step() if step is None else step
    if step is None:
        manager.close()
        raise FileNotFoundError(f"{workdir} holds no checkpoint")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    manager.close()
    return meta
