"""Train-state checkpoints: orbax, asynchronous, keep the last N, resume from the newest.

Each step directory holds `params` and `opt_state` (separate items, so a finished run's student can be
restored as a teacher without its optimizer) and `meta` (step, model family and config). The tf.data iterator
position of each process is written beside it, under `input_state/<step>/process_<i>`, before the
asynchronous save begins, so a restored step always has the input position that produced it.
The teacher is never written.

Resuming with another number of processes (a pod job continued on a different slice): orbax restores
the parameters and optimizer state into the new shardings, but each process's input position belongs to
the files and batch rows of the host that wrote it, so the positions are not restored; the input
pipeline starts again from the beginning of its files, with a warning (`restore` says so).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from miniend_jax import files
from miniend_jax.errors import CheckpointError, ConfigError
from miniend_jax.models.registry import DEFAULT_FAMILY, FAMILIES

CHECKPOINT_DIR = "checkpoints"
INPUT_STATE_DIR = "input_state"


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class StateCheckpointer:
    """Saves and restores `TrainState`s of one run directory."""

    def __init__(self, workdir: str, *, save_every: int, keep: int, async_save: bool = True):
        self.workdir = files.absolute(workdir)
        self.save_every = save_every
        self.restored_meta: dict = {}   # the meta of the last `restore`
        self.manager = ocp.CheckpointManager(
            files.join(self.workdir, CHECKPOINT_DIR),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                 create=True),
            item_names=("params", "opt_state", "meta"))

    # -- saving --------------------------------------------------------------------------------
    def save(self, state, model_config, *, input_iterator=None, force: bool = False,
             meta: dict | None = None) -> bool:
        """Saves `state` if its step is due (or `force`); returns whether a save started. `meta`: more
        JSON fields for the checkpoint's meta (the loop's `train_steps` and `inputs`)."""
        step = int(state.step)
        if not (force or step % self.save_every == 0) or step in self.manager.all_steps():
            return False
        if input_iterator is not None:
            self._save_input_state(step, input_iterator)
        meta = {**(meta or {}), "step": step, "family": model_config.family, "model": dataclasses.asdict(model_config),
                "process_count": jax.process_count()}
        saved = self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params), opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(meta)), force=True)
        self._prune_input_states()
        return saved

    def _input_dir(self, step: int) -> str:
        return files.join(self.workdir, INPUT_STATE_DIR, str(step), f"process_{jax.process_index()}")

    def _save_input_state(self, step: int, iterator) -> None:
        import tensorflow as tf
        # TensorFlow writes it locally (its own GCS client is not this run's storage layer), then it is
        # uploaded where the workdir is on object storage.
        with files.local_dir_for(self._input_dir(step)) as directory:
            tf.train.Checkpoint(iterator=iterator).write(os.path.join(directory, "iterator"))

    def _prune_input_states(self) -> None:
        root = files.join(self.workdir, INPUT_STATE_DIR)
        if jax.process_index() != 0:
            return
        names = files.listdir(root)
        keep = {str(s) for s in self.manager.all_steps()}
        newest = max((int(n) for n in names if n.isdigit()), default=None)
        for name in names:
            # The newest input state may belong to a save still in flight: never remove it.
            if name.isdigit() and name not in keep and int(name) != newest:
                files.rmtree(files.join(root, name))

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
        source = files.join(self.workdir, CHECKPOINT_DIR, str(step))
        target = f"{source}.unreadable-{int(time.time())}"
        if jax.process_index() == 0 and files.exists(source):
            files.move_tree(source, target)
        if jax.process_count() > 1:  # every process sees the rename before it lists the steps again
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"set_aside_{step}")
        self.manager.reload()
        return target

    def saved_process_count(self, step: int) -> int:
        """How many processes wrote the input positions of `step` (0 if none were written)."""
        directory = files.join(self.workdir, INPUT_STATE_DIR, str(step))
        return sum(name.startswith("process_") for name in files.listdir(directory))

    def check_model(self, step: int, model_config) -> None:
        """Raises `ConfigError` when the checkpoint at `step` holds a model of other shapes or parameter
        layout than `model_config`: the run's configuration is wrong, not the checkpoint (so it is never
        set aside)."""
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        where = f"checkpoint step {step} in {self.workdir}"
        check_same_model(meta, model_config, where)

    def restore(self, step: int, abstract_state, state_shardings, *, input_iterator=None):
        """The `TrainState` at `step`, placed with `state_shardings`; restores the iterator in place when
        the checkpoint was written by as many processes as this run has (see the module docstring).

        Raises:
          CheckpointError: the input position of one of the processes that wrote the step is missing.
          Whatever orbax raises when the checkpoint's files cannot be read.
        """
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(abstract_state.params, state_shardings.params)),
            opt_state=ocp.args.StandardRestore(_abstract(abstract_state.opt_state, state_shardings.opt_state)),
            meta=ocp.args.JsonRestore()))
        if input_iterator is not None:
            # The writer's process count is in the meta (checkpoints from before it was recorded: count the
            # input positions written); every process reads the same value, so all decide alike.
            writers = restored.meta.get("process_count")
            positions = self.saved_process_count(step)
            if writers is None:
                writers = positions
            if writers == jax.process_count() and positions >= writers:
                self._restore_input_state(step, input_iterator)
            elif jax.process_index() == 0:
                why = (f"was written by {writers} process(es), this run has {jax.process_count()}"
                       if writers != jax.process_count() else "lacks some processes' input positions")
                print(f"warning: checkpoint step {step} {why}: parameters and optimizer state resume (resharded "
                      "to this run's mesh), but per-host input positions cannot be carried over, so the input "
                      "pipeline starts again from the beginning of its files", flush=True)
        self.restored_meta = dict(restored.meta)
        step_array = jax.device_put(jax.numpy.asarray(restored.meta["step"], jax.numpy.int32),
                                    state_shardings.step)
        return abstract_state.replace(step=step_array, params=restored.params, opt_state=restored.opt_state)

    def _restore_input_state(self, step: int, iterator) -> None:
        import tensorflow as tf
        path = files.join(self._input_dir(step), "iterator")
        if not files.glob(path + "*"):
            raise CheckpointError(f"checkpoint step {step} has no input-pipeline state at {path}; the "
                                  "data position cannot be restored.")
        with tempfile.TemporaryDirectory(prefix="miniend_input_state.") as tmp:
            local = self._input_dir(step)
            if files.is_cloud(local):  # TensorFlow reads it from local disk
                files.copy_tree(local, tmp)
                local = tmp
            tf.train.Checkpoint(iterator=iterator).read(os.path.join(local, "iterator")).assert_consumed()


# Fields a resumed run may change: compute and storage dtypes, rematerialisation, dropout.
_RESUMABLE_MODEL_FIELDS = ("dtype", "param_dtype", "remat", "dropout_rate", "attention_dropout", "activation_dropout")


def check_family(meta: dict, where: str) -> str:
    """The model family a checkpoint's meta records (checkpoints written before it was recorded are T5).

    Raises:
      ConfigError: a family this version does not build.
    """
    family = meta.get("family", DEFAULT_FAMILY)
    if family not in FAMILIES:
        raise ConfigError(f"{where} holds a {family!r} model; this version of miniend_jax builds the families "
                          f"{', '.join(sorted(FAMILIES))}: use a newer version or another checkpoint.")
    return family


def check_same_model(meta: dict, model_config, where: str) -> None:
    """Raises `ConfigError` when a checkpoint's recorded model (its `meta`'s family and "model") differs from
    `model_config` in family or in anything but `_RESUMABLE_MODEL_FIELDS` (shapes, architecture, layout)."""
    family = check_family(meta, where)
    if family != model_config.family:
        raise ConfigError(f"{where} holds a {family!r} model, this run's is a {model_config.family!r} model; resume "
                          "with the model it was trained with, or use a new --workdir.")
    saved = meta["model"]
    ours = dataclasses.asdict(model_config)
    changed = sorted(k for k in ours if k not in _RESUMABLE_MODEL_FIELDS and saved.get(k, ours[k]) != ours[k])
    if changed:
        key = changed[0]
        raise ConfigError(f"{where} holds a model with {key}={saved[key]!r}, this run's has {ours[key]!r}; resume "
                          "with the model it was trained with, or use a new --workdir.")


def check_resumable(workdir: str, model_config) -> dict | None:
    """Before anything is written: the newest checkpoint of `workdir` (if any) holds `model_config`'s model.

    Returns:
      That checkpoint's meta, or None when there is none to resume (or it cannot be read: the loop sets
      damaged checkpoints aside).

    Raises:
      ConfigError: it holds another model (see `check_same_model`).
    """
    if not files.isdir(files.join(files.absolute(workdir), CHECKPOINT_DIR)):
        return None
    try:
        meta = read_meta(workdir)
    except (FileNotFoundError, CheckpointError):
        return None
    where = f"the newest checkpoint (step {meta['step']}) in {workdir}"
    check_same_model(meta, model_config, where)
    return meta


def _reader(workdir: str) -> ocp.CheckpointManager:
    """A read-only manager of another run's checkpoints (a teacher, a model to finetune or export): it
    creates nothing in that directory.

    Raises:
      FileNotFoundError: the directory holds no checkpoint.
    """
    root = files.join(files.absolute(workdir), CHECKPOINT_DIR)
    if not files.isdir(root):
        raise FileNotFoundError(f"{workdir} holds no checkpoint")
    return ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(create=False, read_only=True),
                                 item_names=("params", "opt_state", "meta"))


def _read(workdir: str, step: int | None, read):
    """`read(manager, step)` on the newest (or given) checkpoint of `workdir`; a checkpoint whose files
    cannot be read is a `CheckpointError` naming it."""
    manager = _reader(workdir)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir} holds no checkpoint")
        try:
            return read(manager, step)
        except (ValueError, OSError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"checkpoint step {step} of {workdir} cannot be read ({type(error).__name__}: {str(error)[:200]}); "
                "it is damaged or of another model: point the path at a complete checkpoint of this model.") from None
    finally:
        manager.close()


def restore_params(workdir: str, abstract_params, shardings=None, step: int | None = None) -> tuple[Any, dict]:
    """Only the parameters (and meta) of a run's newest (or given) checkpoint, e.g. to use as a teacher.

    Raises:
      FileNotFoundError: `workdir` holds no checkpoint.
      CheckpointError: the checkpoint cannot be read into `abstract_params` (damaged, or another model).
    """
    target = abstract_params if shardings is None else _abstract(abstract_params, shardings)

    def read(manager, step):
        restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target),
                                                                 meta=ocp.args.JsonRestore()))
        return restored.params, restored.meta
    return _read(workdir, step, read)


def read_meta(workdir: str, step: int | None = None) -> dict:
    """The `meta` item (step, model family and config, process count) of a run's newest checkpoint,
    without reading arrays.

    Raises:
      FileNotFoundError: `workdir` holds no checkpoint.
      CheckpointError: the meta cannot be read or names no model.
    """
    def read(manager, step):
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
            raise KeyError("meta has no model config")
        return meta
    return _read(workdir, step, read)
