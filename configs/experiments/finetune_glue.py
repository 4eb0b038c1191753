"""Downstream GLUE for every row of the miniature comparison: finetune on the GLUE tasks at equal rates, score the
CoLA, SST-2, MRPC, STS-B and RTE dev sets (configs/experiments/common.py:glue_config).

Command (the runner `python -m miniend_jax.experiment` runs it for every model):
  python -m miniend_jax.main --config=configs/experiments/finetune_glue.py \
      --workdir=workdirs/experiment/downstream/miniend_e_glue --config.model.path=workdirs/experiment/miniend_e
Expected: a few minutes on 2 CPU cores (100 steps of 32 examples); results.json with each task's scores
and the paper's GLUE score over the tasks present.
"""

from configs.experiments import common


def get_config():
    return common.glue_config(common.TEACHER_WORKDIR)
