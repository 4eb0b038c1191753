"""Baseline: the 6L/384H student pretrained from scratch on span corruption (no teacher).

Command:
  python -m miniend_jax.launch tpu --tpu=NAME --zone=ZONE -- --config=configs/baselines/scratch.py \
      --workdir=gs://BUCKET/scratch --config.data.vocab=gs://BUCKET/spiece.model \
      --config.data.tfds_data_dir=gs://BUCKET/tfds
Expected: about 4 hours on a TPU v4-32 (no teacher forward); paper: GLUE score 84.6 after finetuning.
"""

from configs import t5_base_miniend_e


def get_config():
    c = t5_base_miniend_e.get_config()
    c.mode = "pretrain"
    return c
