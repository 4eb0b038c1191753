"""Downstream SAMSum for every row of the miniature comparison: finetune on rows 0-717 of the local
validation split, score ROUGE on the first 200 test dialogues (configs/experiments/common.py:samsum_config).

Command (the runner `python -m miniend_jax.experiment` runs it for every model):
  python -m miniend_jax.main --config=configs/experiments/finetune_samsum.py \
      --workdir=workdirs/experiment/downstream/miniend_e_samsum --config.model.path=workdirs/experiment/miniend_e
Expected: a few minutes on 2 CPU cores (30 steps of 16 dialogues); results.json with ROUGE-1/2/L/Lsum.
"""

from configs.experiments import common


def get_config():
    return common.samsum_config(common.TEACHER_WORKDIR)
