"""MiniEnD-E on 2 CPU cores: the small teacher of `configs/small_cpu_teacher.py` into a 1/8-FLOPs student.

Commands:
  python -m miniend_jax.main --config=configs/small_cpu_teacher.py --workdir=workdirs/small_teacher
  python -m miniend_jax.main --config=configs/small_cpu.py --workdir=workdirs/small_miniend_e
Expected: about 10 minutes on 2 CPU cores for 300 steps of 32 x 128 tokens; every distillation term
falls, and the student's held-out span-corruption loss reaches 5.50 (teacher 5.45, the same student
trained from scratch for the same steps 5.74; docs/small_cpu.md). With `--config.export.at_end=True`
the student is also written as a HF directory.

The real T5 vocabulary and the held-out Wikipedia shards; 16 relation heads (ours: the student's
attention width of 128 would leave 4 dimensions per head at the default 32).
"""

from configs import base, small_cpu_teacher


def get_config():
    c = base.get_config()
    c.mode = "distill"
    c.teacher.source = "miniend"
    c.teacher.path = "workdirs/small_teacher"
    # The shape that path holds; with teacher.source=preset, a random teacher of that shape (tests).
    c.teacher.preset = "t5-v1_1-small"
    c.teacher.overrides.update(small_cpu_teacher.get_config().student.overrides.to_dict())
    c.student.preset = "t5-v1_1-small"
    # 1/8 of the teacher's layer FLOPs: half the width (d_model 128, 2 heads x 64, FFN 512), half the depth.
    c.student.overrides.update(dict(d_model=128, num_heads=2, d_kv=64, d_ff=512, num_encoder_layers=2,
                                    num_decoder_layers=2, dropout_rate=0.0))
    c.distill.objective = "miniend_e"
    c.distill.relation_heads = 16
    c.data.inputs_length = 128
    c.data.shuffle_buffer = 2_000
    c.optim.name = "adamw"          # as measured in docs/small_cpu.md (before relative steps became the default)
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 15
    c.train.steps = 300
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.checkpoint_every = 100
    c.train.eval_every = 100
    c.train.eval_batches = 10
    return c
