"""seqio's registries keyed by what a Task is, not only by its name.

`seqio.TaskRegistry` is process-wide and refuses a second `add` of a name, so registering code tends to
skip names already present. That keeps the *first* definition: a process that registers `glue_sst2` with
one vocabulary (or data directory) and later asks for it with another silently reads the first, and token
ids of a larger vocabulary than the model's turn into NaN losses (JAX's gather fills out-of-range rows with
NaN). `add_task` and `add_mixture` register a name once per definition: the same definition again is a
no-op, a different one replaces the old Task, and drops the Mixtures that hold it (seqio Mixtures keep Task
objects, not names), so that their own registration adds them again over the new Task.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from tasks import runtime  # noqa: F401,I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax import files
from miniend_jax.checkpoints import bpe

_TASKS: dict[str, str] = {}      # Task name -> its definition, as registered here
_MIXTURES: dict[str, str] = {}   # Mixture name -> its definition


def vocabulary_key(spiece_model: str, extra_ids: int) -> list:
    """What identifies a SentencePiece vocabulary: its absolute path, size and modification time (a model
    retrained in place is another vocabulary) and the number of extra ids. A directory (a byte-level BPE
    tokenizer, `miniend_jax.checkpoints.bpe`) is keyed by its path and the size and modification time (or
    generation) of each tokenizer file in it; a tokenizer.json file as a SentencePiece model is."""
    if files.isdir(spiece_model):
        return [files.absolute(spiece_model), bpe.file_versions(spiece_model), extra_ids]
    if files.is_cloud(spiece_model):
        known = files.exists(spiece_model)
        return [spiece_model, files.version(spiece_model) if known else None, None, extra_ids]
    path = os.path.abspath(spiece_model)
    stat = os.stat(path) if os.path.exists(path) else None
    return [path, stat.st_size if stat else None, stat.st_mtime_ns if stat else None, extra_ids]


def _key(definition: Any) -> str:
    return json.dumps(definition, sort_keys=True, default=str)


def add_task(name: str, definition: Any, **task_kwargs) -> None:
    """`seqio.TaskRegistry.add(name, **task_kwargs)` unless `name` is registered with an equal `definition`
    (any JSON-able value naming what the Task reads and how: vocabulary, source, directories). A name
    registered with another definition, or by other code, is replaced."""
    key = _key(definition)
    if name in seqio.TaskRegistry.names() and _TASKS.get(name) == key:
        return
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
        for mixture in list(seqio.MixtureRegistry.names()):
            if name in {t.name for t in seqio.MixtureRegistry.get(mixture).tasks}:
                seqio.MixtureRegistry.remove(mixture)
                _MIXTURES.pop(mixture, None)
    seqio.TaskRegistry.add(name, **task_kwargs)
    _TASKS[name] = key


def add_mixture(name: str, tasks: Sequence[str], **mixture_kwargs) -> None:
    """`seqio.MixtureRegistry.add(name, tasks, **mixture_kwargs)` unless `name` holds these Tasks, as they
    are registered now, with the same arguments."""
    key = _key([[[t, _TASKS.get(t)] for t in tasks], repr(sorted(mixture_kwargs.items()))])
    if name in seqio.MixtureRegistry.names() and _MIXTURES.get(name) == key:
        return
    seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, list(tasks), **mixture_kwargs)
    _MIXTURES[name] = key
