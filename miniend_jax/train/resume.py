"""What a run resumed in its workdir may change, checked before anything is compiled or written: the step
count (`train.steps`, which shapes the learning-rate schedule) and the input files its position refers to.

Every checkpoint's meta records `train_steps` (the schedule it was trained under) and `inputs`
(`input_record`: each file's path, size and fingerprints, and the held-out count: the corpus of
pretraining and distillation, the `train` split files of a finetuning run's Tasks). On resume:

| change                                        | what happens                                            |
|-----------------------------------------------|---------------------------------------------------------|
| `train.steps` below the checkpoint's step     | refused: nothing would be trained                       |
| `train.steps` equal to it                     | the run is complete: said; its final evaluation re-runs |
| `train.steps` changed, schedule unchanged     | continues (a constant rate, warm-up given in steps)     |
| `train.steps` changed, schedule moves         | refused, or with `overwrite_config=True` continues on   |
|                                               | the new schedule, printing the rate before and after    |
| a corpus file appended to                     | continues from its position; the added text is read     |
|                                               | when the pass reaches it                                |
| the teacher's weights or the vocabulary file  | refused: every step so far was trained against them     |
| changed (another newest step of a miniend     |                                                         |
| teacher workdir)                              |                                                         |
| a file added, removed or replaced; the files  | `data.on_input_change='error'` (default): refused,      |
| reordered; `data.validation_files` changed;   | naming the change; `'restart'`: parameters and          |
| another source                                | optimizer state resume, the input pipeline starts again |
|                                               | from the beginning of the current files                 |

A file is *appended to* when it grew and its first and last 64 KiB as recorded are unchanged; *replaced*
when its size or those bytes differ otherwise (a change in the middle of a file of the same size is not
seen). The held-out set is the last `data.validation_files` files in sorted order (`tasks.pretraining.
split_files`), so an added file can move a held-out file into training: refused, never silent.
A checkpoint is set aside only when its own files cannot be read, never because the inputs changed.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from miniend_jax import files
from miniend_jax.errors import ConfigError

FINGERPRINT_BYTES = 64 * 1024
INPUT_CHANGE_POLICIES = ("error", "restart")


def _digest(path: str, start: int, end: int) -> str:
    return hashlib.sha256(files.read_bytes(path, start, max(end - start, 0)) if end > start else b"").hexdigest()


def file_record(path: str) -> dict:
    """`{"path", "size", "head", "tail"}`: absolute path, bytes, and sha256 of the first and last
    `FINGERPRINT_BYTES` bytes (overlapping for small files)."""
    size = files.getsize(path)
    return {"path": files.absolute(path), "size": size, "head": _digest(path, 0, min(size, FINGERPRINT_BYTES)),
            "tail": _digest(path, max(size - FINGERPRINT_BYTES, 0), size)}


def input_record(source: str, files=(), validation_files: int = 0, **identity) -> dict:
    """What a pretraining input position refers to: the source, each file's `file_record` in reading order,
    the held-out count, and any `identity` fields (e.g. a TFDS name for `c4`)."""
    return {"source": source, "files": [file_record(f) for f in files], "validation_files": int(validation_files),
            **identity}


def model_record(section) -> dict:
    """What identifies a model section's weights (`teacher`): a HF directory's weight and config files
    (`file_record`s), a miniend workdir's newest checkpoint step, or a preset's name and overrides."""
    if section.source == "hf":
        names = ("*.safetensors", "*.bin", "config.json")
        weights = sorted(f for name in names for f in files.glob(files.join(section.path, name)))
        return {"source": "hf", "files": [file_record(f) for f in weights]}
    if section.source == "miniend":
        from miniend_jax.checkpoints.state import read_meta
        return {"source": "miniend", "path": files.absolute(section.path), "step": read_meta(section.path)["step"]}
    return {"source": section.source, "preset": section.preset, "overrides": section.overrides.to_dict()}


def models_record(config) -> dict:
    """The teacher (distillation) and the vocabulary a run trains against (a SentencePiece model's
    `file_record`, or each file of a byte-level BPE tokenizer)."""
    import miniend_jax.checkpoints.bpe as bpe
    tokenizer = bpe.tokenizer_files(config.data.vocab)  # a BPE tokenizer (BART's) may be a directory of files
    record = {"vocab": file_record(config.data.vocab) if tokenizer is None else
              {"path": files.absolute(config.data.vocab), "files": {n: file_record(f) for n, f in tokenizer.items()}}}
    if config.mode == "distill":
        record["teacher"] = model_record(config.teacher)
    return record


@dataclasses.dataclass(frozen=True)
class InputChange:
    kind: str      # appended | added | removed | replaced | reordered | held_out | source
    what: str      # the file or field, and the detail

    def __str__(self) -> str:
        return f"{self.kind}: {self.what}"


def _grew_from(path: str, old: dict) -> bool:
    """The file at `path` is `old`'s file with bytes appended."""
    size = files.getsize(path)
    return (size > old["size"] and _digest(path, 0, min(old["size"], FINGERPRINT_BYTES)) == old["head"]
            and _digest(path, max(old["size"] - FINGERPRINT_BYTES, 0), old["size"]) == old["tail"])


def input_changes(recorded: dict, current: dict) -> list[InputChange]:
    """Every difference between the input record of a checkpoint and the run's (see the module table)."""
    changes = []
    if {k: v for k, v in recorded.items() if k not in ("files", "validation_files")} != \
            {k: v for k, v in current.items() if k not in ("files", "validation_files")}:
        changes.append(InputChange("source", f"{_identity(recorded)} -> {_identity(current)}"))
    old = {r["path"]: r for r in recorded.get("files", [])}
    new = {r["path"]: r for r in current.get("files", [])}
    for path in sorted(set(new) - set(old)):
        changes.append(InputChange("added", path))
    for path in sorted(set(old) - set(new)):
        changes.append(InputChange("removed", path))
    for path in sorted(set(old) & set(new)):
        if (old[path]["size"], old[path]["head"], old[path]["tail"]) == (new[path]["size"], new[path]["head"],
                                                                         new[path]["tail"]):
            continue
        if _grew_from(path, old[path]):
            changes.append(InputChange("appended", f"{path} ({old[path]['size']} -> {new[path]['size']} bytes)"))
        else:
            changes.append(InputChange("replaced", f"{path} ({old[path]['size']} -> {new[path]['size']} bytes, "
                                                   "its recorded bytes differ)"))
    shared_old = [r["path"] for r in recorded.get("files", []) if r["path"] in new]
    shared_new = [r["path"] for r in current.get("files", []) if r["path"] in old]
    if shared_old != shared_new:
        changes.append(InputChange("reordered", "the files are read in another order"))
    if recorded.get("validation_files") != current.get("validation_files"):
        changes.append(InputChange("held_out", f"data.validation_files {recorded.get('validation_files')} -> "
                                               f"{current.get('validation_files')}"))
    return changes


def _identity(record: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(record.items()) if k not in ("files", "validation_files"))


def check_inputs(recorded: dict | None, current: dict | None, policy: str, where: str) -> bool:
    """Applies the module's rule to the inputs of a resumed run.

    Returns:
      Whether the checkpoint's input position may be restored (False: start the pipeline again).

    Raises:
      ConfigError: a change other than appending, under `data.on_input_change='error'`.
    """
    if recorded is None or current is None:  # a checkpoint written before inputs were recorded
        return True
    changes = input_changes(recorded, current)
    appended = [c for c in changes if c.kind == "appended"]
    refused = [c for c in changes if c.kind != "appended"]
    if refused:
        listed = "; ".join(str(c) for c in refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else "")
        if policy != "restart":
            raise ConfigError(
                f"the inputs changed since {where} ({listed}): its input position and held-out set refer to the "
                "files as they were. Restore them, or set --config.data.on_input_change=restart to resume the "
                "parameters and optimizer state with the input pipeline starting again over the current files, "
                "or use a new --workdir.")
        print(f"warning: the inputs changed since {where} ({listed}); data.on_input_change=restart: parameters "
              "and optimizer state resume, the input pipeline starts again from the beginning of the current "
              "files", flush=True)
        return False
    for change in appended:
        print(f"input: {change.what} grew since {where}: the run continues from its position, and the added "
              "text is read when the pass reaches it", flush=True)
    return True


def check_train_steps(config, meta: dict, previous_steps: int | None, where: str) -> None:
    """Applies the module's rule to `train.steps` of a resumed run whose newest checkpoint has `meta`.

    `previous_steps`: the `train.steps` the checkpoint was trained under (its meta's `train_steps`, or the
    workdir's config.json for checkpoints written before it was recorded).

    Raises:
      ConfigError: `train.steps` below the checkpoint's step, or a change that moves the learning rate
        without `overwrite_config`.
    """
    step, steps = int(meta["step"]), int(config.train.steps)
    if steps < step:
        raise ConfigError(f"train.steps={steps} is below the step of {where}: there is nothing to train. "
                          f"Set train.steps > {step} to continue the run, or use a new --workdir.")
    if previous_steps is not None and previous_steps != steps and step < steps:
        at, before, after = rate_change(config.optim, previous_steps, steps, step)
        if before != after:
            message = (f"train.steps {previous_steps} -> {steps} moves the learning-rate schedule of {where}: the rate "
                       f"at step {at} would go from {before:.4g} to {after:.4g}")
            if not config.get("overwrite_config", False):
                raise ConfigError(f"{message}. Restore train.steps={previous_steps}; or set "
                                  "--config.overwrite_config=True to continue on the new schedule; or use "
                                  "optim.decay='constant' with warm-up in steps, which train.steps does not move.")
            print(f"warning: {message} (overwrite_config=True: continuing on the new schedule)", flush=True)
    if step == steps:
        print(f"the run is complete: {where} is at train.steps={steps}; its final evaluation runs again "
              f"(set train.steps > {steps} to train on)", flush=True)


def rate_change(optim, old_steps: int, new_steps: int, step: int) -> tuple[int, float, float]:
    """`(at, old rate, new rate)`: the first step `at` from `step` on (up to the shorter run) where the
    schedules for `old_steps` and `new_steps` total steps differ, and their rates there; `(step, r, r)` when
    they never do."""
    from miniend_jax.train.state import learning_rate_schedule, warmup_steps
    steps = np.arange(step, max(min(old_steps, new_steps), step + 1))
    schedule = lambda total: learning_rate_schedule(optim.learning_rate, total, warmup_steps(optim, total), optim.decay,
                                                    optim.end_lr_fraction)
    rates = lambda total: np.broadcast_to(np.asarray(schedule(total)(steps), np.float64), steps.shape)
    old, new = rates(old_steps), rates(new_steps)  # (a constant schedule returns a scalar)
    differ = np.flatnonzero(old != new)
    first = int(differ[0]) if differ.size else 0
    return int(steps[first]), float(old[first]), float(new[first])


def check_resume(config, workdir: str, meta: dict | None, inputs: dict | None) -> bool:
    """The rules above for a run about to resume from its newest checkpoint (`meta`, None: a fresh run).

    Returns:
      Whether the checkpoint's input position may be restored.

    Raises:
      ConfigError: see `check_train_steps` and `check_inputs`.
    """
    if meta is None:
        return True
    where = f"the newest checkpoint (step {meta['step']}) in {workdir}"
    previous = meta.get("train_steps")
    if previous is None:  # written before the meta recorded it: the config it last ran with
        from miniend_jax.jsonl import read_json_object
        try:
            previous = read_json_object(files.join(workdir, "config.json"))["train"]["steps"]
        except (OSError, ValueError, KeyError, TypeError):
            previous = None
    check_train_steps(config, meta, previous, where)
    recorded, current = dict(meta.get("inputs") or {}), dict(inputs or {})
    old_models, new_models = recorded.pop("models", {}), current.pop("models", {})
    for name in sorted(set(old_models) & set(new_models)):
        if old_models[name] != new_models[name]:
            raise ConfigError(
                f"the {name} changed since {where} ({_model_change(old_models[name], new_models[name])}): every step "
                f"so far was trained against the one recorded. Restore it, or use a new --workdir.")
    return check_inputs(recorded or None, current or None, config.data.on_input_change, where)


def _model_change(old: dict, new: dict) -> str:
    if "head" in old:  # a file_record (the vocabulary)
        return f"{old['path']}: {old['size']} -> {new.get('size')} bytes, its recorded bytes differ"
    if "files" in old and "files" in new:
        listed = lambda records: list(records.values()) if isinstance(records, dict) else records  # BPE: by name
        changes = input_changes({"files": listed(old["files"])}, {"files": listed(new["files"])})
        return "; ".join(str(c) for c in changes[:3]) or "its files differ"
    return f"{_identity(old)} -> {_identity(new)}"
