"""L_Imp: logits plus decoder self-attention relations (no encoder signal; the paper's unstable baseline).

A student row (d_model 128, 2+2 layers) of the miniature comparison (configs/experiments/common.py; docs/results.md).
Command (the runner `python -m miniend_jax.experiment` runs every row after the teacher):
  python -m miniend_jax.main --config=configs/experiments/l_imp.py --workdir=workdirs/experiment/l_imp
Expected: a few minutes on 2 CPU cores (400 steps of 32 x 128 tokens); its held-out span-corruption loss
is in docs/results.md.
"""

from configs.experiments import common


def get_config():
    return common.student_config("l_imp")
