"""A tiny distillation run for the test suite: random tiny teacher, tiny student, real text and vocabulary.

Command: python -m miniend_jax.main --config=tests/configs/tiny.py --workdir=/tmp/tiny
Expected: under a minute on 2 CPU cores; the distillation loss falls over 30 steps.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.mode = "distill"
    c.teacher.source = "preset"
    c.teacher.preset = "t5-v1_1-small"
    c.teacher.overrides.update(dict(d_model=64, num_heads=2, d_kv=32, d_ff=128, num_encoder_layers=2,
                                    num_decoder_layers=2))
    c.student.preset = "t5-v1_1-small"
    c.student.overrides.update(dict(d_model=32, num_heads=2, d_kv=16, d_ff=64, num_encoder_layers=1,
                                    num_decoder_layers=1, dropout_rate=0.0))
    c.distill.objective = "miniend_d"
    c.distill.relation_heads = 4
    c.data.files = "../shared/data/enwiki_2015_extract/AA/wiki_0*.gz"
    c.data.inputs_length = 32
    c.data.shuffle_buffer = 64
    c.optim.name = "adamw"
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 0
    c.train.steps = 30
    c.train.batch_size = 8
    c.train.log_every = 1
    c.train.checkpoint_every = 10
    c.train.eval_batches = 2
    return c
