"""A tiny BART finetuning run for the test suite: the student of `tests/configs/tiny_bart.py` finetuned on
SAMSum from ../shared/data and scored with ROUGE, decoded with BART's generation settings.

Command (after tests/configs/tiny_bart.py's commands):
  python -m miniend_jax.main --config=tests/configs/tiny_bart_finetune.py --workdir=/tmp/tiny_bart_ft \
      --config.data.vocab=/tmp/bart_bpe --config.model.path=/tmp/tiny_bart
Expected: about 20 s on 2 CPU cores; the training loss falls, results.json holds ROUGE-1/2/L/Lsum (0-100;
near 0 after 20 steps), and `best/` is a HF BART directory (with the tokenizer, and the decoding it was
scored with in generation_config.json) that transformers loads.
"""

from configs.finetune import bart_summarization


def get_config():
    c = bart_summarization.get_config("samsum")
    c.model.path = "/tmp/tiny_bart"
    c.model.dropout_rate = 0.0
    c.data.vocab = ""                  # the byte-level BPE tokenizer the student was distilled with
    c.tasks.eval_examples = 16
    c.tasks.inputs_length = 64
    c.tasks.targets_length = 16
    c.data.shuffle_buffer = 64
    c.decode.num_beams = 2
    c.decode.batch_size = 16
    c.optim.name = "adamw"
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 0
    c.train.steps = 20
    c.train.batch_size = 8
    c.train.log_every = 5
    c.train.eval_every = 20
    c.train.checkpoint_every = 20
    c.train.eval_batches = 2
    return c
