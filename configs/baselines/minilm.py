"""Baseline: MiniLM: last-layer encoder self-attention relations (QQ, KK, VV; the encoder-only recipe).

Command:
  python -m miniend_jax.launch tpu --tpu=NAME --zone=ZONE -- --config=configs/baselines/minilm.py \
      --workdir=gs://BUCKET/minilm --config.teacher.path=gs://BUCKET/t5-base \
      --config.data.vocab=gs://BUCKET/spiece.model --config.data.tfds_data_dir=gs://BUCKET/tfds
Expected: about 10 hours on a TPU v4-32, same data and steps as MiniEnD-E; paper: -2.3 XSum ROUGE-L against from-scratch.
"""

from configs import t5_base_miniend_e


def get_config():
    c = t5_base_miniend_e.get_config()
    c.distill.objective = "minilm"
    return c
