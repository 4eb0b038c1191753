"""Baseline: L_Imp, the implicit objective: logits plus decoder self-attention relations.

Command:
  python -m miniend_jax.launch tpu --tpu=NAME --zone=ZONE -- --config=configs/baselines/l_imp.py \
      --workdir=gs://BUCKET/l_imp --config.teacher.path=gs://BUCKET/t5-base \
      --config.data.vocab=gs://BUCKET/spiece.model --config.data.tfds_data_dir=gs://BUCKET/tfds
Expected: about 10 hours on a TPU v4-32, same data and steps as MiniEnD-E; paper: unstable training, encoder gradient-norm spikes (about 0.08 against 0.001-0.005).
"""

from configs import t5_base_miniend_e


def get_config():
    c = t5_base_miniend_e.get_config()
    c.distill.objective = "l_imp"
    return c
