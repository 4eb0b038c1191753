"""Entry point: `python -m miniend_jax.main --config=configs/X.py [--config.a.b=v] --workdir=DIR`.

Modes (`config.mode`, one module each under `miniend_jax/modes/`): `distill` (teacher -> student),
`pretrain` (a model from scratch on span corruption: the from-scratch baseline, or a teacher), `finetune`
(any checkpoint on a seqio Task or Mixture, keeping the best checkpoint by a validation score), `evaluate`
(a checkpoint on Tasks: `results.json` and a markdown table), `infer` (a checkpoint decodes a Task split
or a file of inputs into `predictions.jsonl`), `export` (the newest checkpoint of a workdir
-> HF), `plan` (compile the train step for a pod ahead of time: memory and FLOPs per device).

Everything that can be wrong with the input is checked before loading weights or compiling; such errors
are printed as one line and exit with status 2.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from miniend_jax.console import quiet_console
from miniend_jax.errors import MiniEndError
from miniend_jax.modes import run
from miniend_jax.modes.plan import simulate_devices

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")

__all__ = ["main", "run"]


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    quiet_console()
    try:
        simulate_devices(FLAGS.config)  # mode=plan: before JAX starts
        run(FLAGS.config, FLAGS.workdir)
    except MiniEndError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
