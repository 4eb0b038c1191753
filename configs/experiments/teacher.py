"""The teacher of the miniature comparison: T5 v1.1 style, 4+4 layers, d_model 256, from scratch.

Command (the experiment runner, `python -m miniend_jax.experiment`, runs it as its first stage):
  python -m miniend_jax.main --config=configs/experiments/teacher.py --workdir=workdirs/experiment/teacher \
      --config.data.vocab=workdirs/experiment/spm8k.model
Expected: about 45 minutes on 2 CPU cores (700 steps of 32 x 128 tokens, 3.7 s a step measured on an AMD
EPYC machine); held-out span-corruption loss about 5.3 nats over the runner's 8k vocabulary.
"""

from configs.experiments import common


def get_config():
    return common.teacher_config()
