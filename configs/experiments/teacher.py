"""The teacher of the miniature comparison: T5 v1.1 style, 4+4 layers, d_model 256, from scratch.

Command (the experiment runner, `python -m miniend_jax.experiment`, runs it as its first stage):
  python -m miniend_jax.main --config=configs/experiments/teacher.py --workdir=workdirs/experiment/teacher
Expected: about 15 minutes on 2 CPU cores (400 steps of 32 x 128 tokens); held-out span-corruption loss
about 5.5 nats (docs/results.md).
"""

from configs.experiments import common


def get_config():
    return common.teacher_config()
