"""Finetune a checkpoint on a summarization task (XSum, CNN/DailyMail or SAMSum), keeping the best
validation ROUGE-L checkpoint; decoding is beam search (4 beams, length penalty 0.6, as T5).

Command (TASK: xsum, cnn_dailymail, samsum):
  python -m miniend_jax.main --config=configs/finetune/summarization.py:samsum --workdir=workdirs/ft_samsum \
      --config.model.source=miniend --config.model.path=workdirs/small_miniend_e
then score the kept checkpoint on the test split:
  python -m miniend_jax.main --config=configs/finetune/summarization.py:samsum --workdir=workdirs/ft_samsum/test \
      --config.mode=evaluate --config.model.source=hf --config.model.path=workdirs/ft_samsum/best \
      --config.tasks.eval_split=test
Expected: results.json / results.md with ROUGE-1/2/L/Lsum; `best/` is a HF directory.
Local data (../shared/data) holds samples only: SAMSum trains on 718 of its validation dialogues, CNN/DM on
900 of its validation articles, and XSum has test articles only, so finetune XSum from TFDS
(`--config.tasks.summarization_source=tfds`); see tasks/summarization.py.
"""

from configs import base

LENGTHS = {"xsum": (512, 64), "cnn_dailymail": (512, 128), "samsum": (256, 64)}


def get_config(task: str = "samsum"):
    if task not in LENGTHS:
        raise ValueError(f"configs/finetune/summarization.py:{task}: use one of {', '.join(LENGTHS)}.")
    c = base.get_config()
    c.mode = "finetune"
    c.model.source = "miniend"
    c.model.path = "workdirs/small_miniend_e"
    c.tasks.train = f"summ_{task}"
    c.tasks.eval = f"summ_{task}"
    c.tasks.eval_split = "validation"
    c.tasks.best_metric = f"summ_{task}/rougeL"
    c.tasks.inputs_length, c.tasks.targets_length = LENGTHS[task]
    c.data.pack = False
    c.decode.num_beams = 4
    c.decode.length_penalty = 0.6
    c.decode.length_penalty_rule = "t5"   # t5x's beam search, ((5 + len) / 6) ** 0.6
    c.decode.batch_size = 32
    base.use_optimizer_of(c, "finetune")  # AdamW 3e-4, constant, no weight decay
    c.train.steps = 600
    c.train.batch_size = 16
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 1
    c.train.eval_batches = 4
    return c
