"""A small teacher pretrained from scratch on the Wikipedia extract, for CPU runs of the pipeline.

Command:
  python -m miniend_jax.main --config=configs/small_cpu_teacher.py --workdir=workdirs/small_teacher
Expected: about 25 minutes on 2 CPU cores (600 steps of 32 x 128 tokens, ~2.2 s a step); held-out
span-corruption loss falls from 10.4 (uniform over 32k ids) to 5.45 (measured, docs/small_cpu.md).
The teacher for `configs/small_cpu.py`.

Shape (ours): T5 v1.1 style (gated-GELU, untied), d_model 256, 4 heads x 64, FFN 1024, 4+4 layers,
the real T5 vocabulary (32,128 ids): 25.9M parameters, 16.4M of them embeddings and head.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.mode = "pretrain"
    c.student.preset = "t5-v1_1-small"
    c.student.overrides.update(dict(d_model=256, num_heads=4, d_kv=64, d_ff=1024, num_encoder_layers=4,
                                    num_decoder_layers=4, dropout_rate=0.0))
    c.data.inputs_length = 128
    c.data.shuffle_buffer = 2_000
    c.optim.name = "adamw"          # as measured in docs/small_cpu.md (before relative steps became the default)
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 30
    c.train.steps = 600
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.checkpoint_every = 100
    c.train.eval_every = 200
    c.train.eval_batches = 10
    return c
