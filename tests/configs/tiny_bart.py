"""Tiny BART runs for the test suite, on real text with BART's denoising objective: a teacher pretrained
from scratch (`:teacher`, mode=pretrain), then MiniEnD-E into a student of half its depth copied from its
layers (distilbart's initialisation).

Commands (a byte-level BPE tokenizer first):
  python -m miniend_jax.checkpoints.bpe --corpus '../shared/data/enwiki_2015_extract/AA/wiki_0*.gz' \
      --vocab_size 512 --max_lines 3000 --out /tmp/bart_bpe
  python -m miniend_jax.main --config=tests/configs/tiny_bart.py:teacher --workdir=/tmp/tiny_bart_teacher \
      --config.data.vocab=/tmp/bart_bpe
  python -m miniend_jax.main --config=tests/configs/tiny_bart.py --workdir=/tmp/tiny_bart \
      --config.data.vocab=/tmp/bart_bpe --config.teacher.path=/tmp/tiny_bart_teacher
Expected: about 20 s each on 2 CPU cores; the teacher's denoising loss falls from ln(512) = 6.2 (to about
5.2), and the distillation loss falls over 30 steps (each term from its first logged value to its last).
"""

from configs import base


TEACHER = dict(vocab_size=512, d_model=64, num_heads=4, d_ff=128, num_encoder_layers=2, num_decoder_layers=2,
               max_position_embeddings=64, dropout_rate=0.0)


def get_config(stage: str = "distill"):
    if stage not in ("teacher", "distill"):
        raise ValueError(f"tests/configs/tiny_bart.py:{stage}: use 'teacher' or 'distill'.")
    c = base.get_config()
    c.mode = "distill"
    c.teacher.source = "miniend"
    c.teacher.path = "/tmp/tiny_bart_teacher"
    c.teacher.preset = "bart-base"       # the shape that path holds
    c.teacher.overrides.update(TEACHER)
    c.student.preset = "bart-base"
    c.student.overrides.update(dict(TEACHER, num_encoder_layers=1, num_decoder_layers=1))
    c.student.init = "teacher_layers"
    if stage == "teacher":
        c.mode = "pretrain"
        c.student.overrides.update(TEACHER)
        c.student.init = "random"
    c.distill.objective = "miniend_e"
    c.distill.relation_heads = 4
    c.data.files = "../shared/data/enwiki_2015_extract/AA/wiki_0*.gz"
    c.data.vocab = ""                  # a byte-level BPE tokenizer (see Command)
    c.data.objective = "denoising"
    c.data.inputs_length = 32
    c.data.shuffle_buffer = 64
    c.optim.name = "adamw"
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 0
    c.train.steps = 30
    c.train.batch_size = 8
    c.train.log_every = 5
    c.train.checkpoint_every = 15
    c.train.eval_batches = 2
    return c
