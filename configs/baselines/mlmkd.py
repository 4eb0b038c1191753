"""Baseline: logit KD only (the decoder-only recipe, DistilGPT2 style).

Command:
  python -m miniend_jax.launch tpu --tpu=NAME --zone=ZONE -- --config=configs/baselines/mlmkd.py \
      --workdir=gs://BUCKET/mlmkd --config.teacher.path=gs://BUCKET/t5-base \
      --config.data.vocab=gs://BUCKET/spiece.model --config.data.tfds_data_dir=gs://BUCKET/tfds
Expected: about 10 hours on a TPU v4-32, same data and steps as MiniEnD-E; paper: +0.2 XSum ROUGE-L over from-scratch, well below MiniEnD.
"""

from configs import t5_base_miniend_e


def get_config():
    c = t5_base_miniend_e.get_config()
    c.distill.objective = "mlmkd"
    return c
