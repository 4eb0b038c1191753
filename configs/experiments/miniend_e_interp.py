"""MiniEnD-E with interpolated distillation: every target is (1 - a_t) stopgrad(P_student) + a_t P_teacher,
a_t rising linearly from 0.1 to 1 over the first 20% of the steps (METHOD.md; configs/t5_3b_interp.py).

A student row (d_model 128, 2+2 layers) of the miniature comparison (configs/experiments/common.py; docs/results.md).
Command (the runner `python -m miniend_jax.experiment` runs every row after the teacher):
  python -m miniend_jax.main --config=configs/experiments/miniend_e_interp.py \
      --workdir=workdirs/experiment/miniend_e_interp
Expected: a few minutes on 2 CPU cores (400 steps of 32 x 128 tokens); its held-out span-corruption loss
is in docs/results.md.
"""

from configs.experiments import common


def get_config():
    c = common.student_config("miniend_e")
    c.distill.interpolation.schedule = "linear"
    c.distill.interpolation.start = 0.1
    c.distill.interpolation.steps = common.STUDENT_STEPS // 5
    return c
