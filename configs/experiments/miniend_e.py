"""MiniEnD-E: logits, decoder self-attention and encoder self-attention relations.

A student row (d_model 128, 2+2 layers) of the miniature comparison (configs/experiments/common.py; docs/results.md).
Command (the runner `python -m miniend_jax.experiment` runs every row after the teacher):
  python -m miniend_jax.main --config=configs/experiments/miniend_e.py --workdir=workdirs/experiment/miniend_e
Expected: a few minutes on 2 CPU cores (400 steps of 32 x 128 tokens); its held-out span-corruption loss
is in docs/results.md.
"""

from configs.experiments import common


def get_config():
    return common.student_config("miniend_e")
