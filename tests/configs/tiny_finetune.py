"""A tiny finetuning run for the test suite: a random tiny T5 finetuned on SST-2 from ../shared/data.

Command: python -m miniend_jax.main --config=tests/configs/tiny_finetune.py --workdir=/tmp/tiny_ft
Expected: about a minute on 2 CPU cores; the validation loss falls, results.json holds the accuracy.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.mode = "finetune"
    c.model.source = "preset"
    c.model.preset = "t5-v1_1-small"
    c.model.overrides.update(dict(d_model=32, num_heads=2, d_kv=16, d_ff=64, num_encoder_layers=1,
                                  num_decoder_layers=1))
    c.model.dropout_rate = 0.0
    c.tasks.train = "glue_sst2"
    c.tasks.eval = "glue_sst2"
    c.tasks.eval_examples = 64
    c.tasks.inputs_length = 32
    c.tasks.targets_length = 4
    c.data.pack = False
    c.data.shuffle_buffer = 256
    c.decode.batch_size = 32
    c.optim.name = "adamw"
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 0
    c.train.steps = 40
    c.train.batch_size = 16
    c.train.log_every = 5
    c.train.eval_every = 20
    c.train.checkpoint_every = 20
    c.train.eval_batches = 4
    return c
