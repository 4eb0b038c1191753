"""The console shows what a user acts on. `quiet_console`, called by the entry points before JAX starts:
- the C++ logs of XLA and TensorFlow keep errors only (`TF_CPP_MIN_LOG_LEVEL=2`, unless the user set it;
  `TF_CPP_MIN_LOG_LEVEL=0` shows everything). Both libraries read it once, when the first of them starts,
  so it must be set before JAX's first computation: without it, tf.data's notices (e.g. on a partially
  read cache, as seqio's evaluation reads one) reach the console;
- absl warnings about choices this project makes on purpose are dropped (`EXPECTED_WARNINGS`); every other
  warning still shows.
TensorFlow's start-up probing is handled where TensorFlow is imported (`tasks/runtime.py`)."""

from __future__ import annotations

import logging
import os

# Message starts of absl warnings raised by deliberate choices.
EXPECTED_WARNINGS = (
    # seqio: packing drops the `*_pretokenized` features; local Tasks read small in-memory sources uncached
    # (their position is checkpointed, so restarts do not repeat data); evaluation pads to the configured
    # lengths; only process 0 writes evaluation logs.
    "Features not in `features_length` will be removed during packing",
    "Using an uncached FunctionDataset for training is not recommended",
    "Given sequence lengths are longer than necessary",
    "'logger_cls' is empty",
    # orbax: models are read from other runs' workdirs read-only.
    "CheckpointManagerOptions.read_only=True",
    "Given directory is read only",
)


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(EXPECTED_WARNINGS)


def quiet_console() -> None:
    """Errors only from the C++ logs (unless `TF_CPP_MIN_LOG_LEVEL` is set), and no `EXPECTED_WARNINGS`
    from absl's Python log (idempotent)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropExpected) for f in logger.filters):
        logger.addFilter(_DropExpected())
