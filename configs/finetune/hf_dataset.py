"""Finetune a checkpoint on a Hugging Face `datasets` dataset: SST-2 from parquet files, as an example of
`tasks.hf` (tasks/hf_tasks.py lists every field).

Command (files `sst2/train.parquet`, `sst2/validation.parquet` with columns `sentence`, `label` 0/1):
  python -m miniend_jax.main --config=configs/finetune/hf_dataset.py --workdir=workdirs/ft_hf_sst2 \
      --config.tasks.hf.sst2.path='sst2/{split}.parquet' \
      --config.model.source=miniend --config.model.path=workdirs/small_miniend_e
A `save_to_disk` directory works the same (`--config.tasks.hf.sst2.path=sst2_saved`); a ClassLabel column
brings its own label names (then set `--config.tasks.hf.sst2.label_names=''`).
Expected: results.json with hf_sst2's accuracy and macro-F1; `inference_eval/hf_sst2-*.jsonl` holds every
scored example; `best/` is a HF directory.
"""

from configs.finetune import glue


def get_config():
    c = glue.get_config("sst2")
    c.tasks.hf.sst2 = dict(
        path="sst2/{split}.parquet",                # or a save_to_disk directory
        splits=dict(train="train", validation="validation"),
        inputs="sst2 sentence: {sentence}",
        targets="{label}",
        label_names="negative,positive",            # label 0, 1
        metrics="accuracy,f1_macro")
    c.tasks.train = "hf_sst2"
    c.tasks.eval = "hf_sst2"
    return c
