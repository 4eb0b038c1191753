"""Entry point: `python -m miniend_jax.main --config=configs/X.py [--config.a.b=v] --workdir=DIR`.

Modes (`config.mode`, one module each under `miniend_jax/modes/`): `distill` (teacher -> student),
`pretrain` (a model from scratch on span corruption: the from-scratch baseline, or a teacher), `finetune`
(any checkpoint on a seqio Task or Mixture, keeping the best checkpoint by a validation score), `evaluate`
(a checkpoint on Tasks: `results.json` and a markdown table), `infer` (a checkpoint decodes a Task split
or a file of inputs into `predictions.jsonl`), `export` (the newest checkpoint of a workdir
-> HF), `plan` (compile the train step for a pod ahead of time: memory and FLOPs per device).

Everything that can be wrong with the input is checked before loading weights or compiling; such errors
are printed as one line and exit with status 2: a config file that cannot be loaded, a `--config.<field>`
override that names no field or has the wrong type, and every check of `config_checks.py`.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from miniend_jax.config_file import LOAD_ERRORS, load_error
from miniend_jax.console import quiet_console
from miniend_jax.errors import MiniEndError
from miniend_jax.modes import run
from miniend_jax.modes.plan import simulate_devices

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")

__all__ = ["main", "parse_flags", "run"]


def _bad_input(message: str) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, where a wrong `--config` file or `--config.<field>` override is bad input like
    any other: one line naming it, exit status 2. (ml_collections raises KeyError, AttributeError, OSError or
    ValueError from inside absl's parser, which would print a traceback; a missing file surfaces only when
    the config is first read, so it is read here.)"""
    try:
        rest = FLAGS(argv)
        getattr(FLAGS.config, "mode", None)  # a file that failed to load raises on first use
    except LOAD_ERRORS as e:
        _bad_input(load_error(e, argv))
    return rest


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
    app.run(main, flags_parser=parse_flags)
