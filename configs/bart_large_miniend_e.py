"""MiniEnD-E for BART: a bart-large teacher (e.g. facebook/bart-large or bart-large-cnn saved with
`save_pretrained`) into the 6L/384H BART student, on BART's own objective (text infilling with Poisson(3)
spans over 30% of the tokens, and sentence permutation; tasks/denoising.py).

Command (the teacher's directory holds its tokenizer, which is the run's vocabulary):
  python -m miniend_jax.main --config=configs/bart_large_miniend_e.py --workdir=workdirs/bart_miniend_e \
      --config.teacher.path=checkpoints/bart-large --config.data.vocab=checkpoints/bart-large
then finetune and score the student on CNN/DailyMail (configs/finetune/bart_summarization.py).
Expected: our choice of steps (the paper distils T5 only): 100k steps of 256 x 256 tokens, about a day on
one H100-class accelerator; every distillation term falls, and the student's held-out denoising loss
ends below that of the same student pretrained from scratch (`--config.mode=pretrain`) for as many steps.

Student: random initialisation (MiniEnD's); `--config.student.preset=distilbart-12-3
--config.student.init=teacher_layers` gives distilbart's shape and initialisation instead. Optimizer:
AdamW at 3e-4 (BART's initialisation, std 0.02, is not T5's; relative steps are T5's remedy), linear decay
with 1% warm-up. Corpus: `data.files` (or `data.source=hf`); denoising reads local or HF-dataset text.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.mode = "distill"
    c.teacher.source = "hf"
    c.teacher.path = "checkpoints/bart-large"
    c.teacher.preset = "bart-large"      # the shape that path holds
    c.teacher.dtype = "bfloat16"
    c.student.preset = "bart-6l-384h"
    c.student.dtype = "bfloat16"
    c.data.vocab = "checkpoints/bart-large"
    c.data.objective = "denoising"
    c.data.inputs_length = 256
    c.distill.objective = "miniend_e"
    c.distill.relation_heads = 32
    c.optim.update(dict(name="adamw", learning_rate=3e-4, weight_decay=0.01, warmup_fraction=0.01,
                        warmup_steps=-1, decay="linear"))
    c.train.steps = 100_000
    c.train.batch_size = 256
    c.train.log_every = 100
    c.train.checkpoint_every = 2_000
    c.train.eval_every = 5_000
    c.export.at_end = True
    return c
