"""Downstream finetuning of one model of the miniature comparison on one task of
configs/experiments/common.py:DOWNSTREAM (`sst2_2k`, `stsb`), scored on the full dev set.

Command (the runner `python -m miniend_jax.experiment` runs it for every model, task and seed):
  python -m miniend_jax.main --config=configs/experiments/finetune.py:sst2_2k --config.seed=0 \
      --workdir=workdirs/experiment/downstream/miniend_e/sst2_2k_s0 --config.model.path=workdirs/experiment/miniend_e
  The random-init row: --config.model.source=preset (the student's shape, random weights).
Expected: 1-2 minutes per run for the students' shape, 4-8 for the teacher, on 2 CPU cores; results.json with the
task's dev scores.
"""

from configs.experiments import common


def get_config(task: str = "sst2_2k"):
    if task not in common.DOWNSTREAM:
        raise ValueError(f"configs/experiments/finetune.py:{task}: use one of {', '.join(common.DOWNSTREAM)}.")
    return common.finetune_config(task)
