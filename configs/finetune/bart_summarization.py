"""Finetune a BART model (a distilled student, or a HF BART) on summarization (XSum, CNN/DailyMail or SAMSum),
keeping the best validation ROUGE-L checkpoint, decoded as bart-large-cnn is: 4 beams, transformers'
length penalty 2.0 with early stopping, no repeated 3-gram, forced `<s>` first and `</s>` last. Inputs are
the documents alone (no `summarize:` instruction, which is T5's).

Command (TASK: xsum, cnn_dailymail, samsum):
  python -m miniend_jax.main --config=configs/finetune/bart_summarization.py:cnn_dailymail \
      --workdir=workdirs/ft_bart_cnn --config.model.path=workdirs/bart_miniend_e \
      --config.data.vocab=checkpoints/bart-large-cnn
Expected: results.json / results.md with ROUGE-1/2/L/Lsum; `best/` is a HF BART directory (with the tokenizer).
`data.vocab` is the byte-level BPE tokenizer the model was trained with (a HF BART directory holds one).
With `model.source=hf` and `decode.length_penalty_rule=auto`, the checkpoint's own generation settings
replace the ones below. Lengths and local data as `configs/finetune/summarization.py`.
"""

from configs.finetune import summarization

# Pipeline ids of BART's vocabulary: <s> 1 (HF 0, swapped with <pad>), </s> 2.
BART_BOS, BART_EOS = 1, 2


def get_config(task: str = "cnn_dailymail"):
    c = summarization.get_config(task)
    c.model.source = "miniend"
    c.model.path = "workdirs/bart_miniend_e"
    c.data.vocab = "checkpoints/bart-large-cnn"
    c.tasks.summarization_instruction = ""   # BART reads the document alone (T5 reads "summarize: ...")
    c.decode.num_beams = 4
    c.decode.length_penalty = 2.0
    c.decode.length_penalty_rule = "hf"
    c.decode.early_stopping = True
    c.decode.no_repeat_ngram_size = 3
    c.decode.forced_bos_token_id = BART_BOS
    c.decode.forced_eos_token_id = BART_EOS
    return c
