"""Finetune a checkpoint on one GLUE task and keep the best validation checkpoint (the paper's protocol:
each task finetuned separately, its dev set reported).

Command (TASK: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli; `glue` for the mixture):
  python -m miniend_jax.main --config=configs/finetune/glue.py:rte --workdir=workdirs/ft_rte \
      --config.model.source=miniend --config.model.path=workdirs/small_miniend_e
Expected: results.json / results.md in the workdir with the task's GLUE metrics; `best/` is a HF directory.
Local GLUE files come from ../shared/data/glue (`--config.tasks.glue_source=tfds` reads TFDS `glue`).
Steps and batch suit the small CPU models of configs/small_cpu.py; on a pod raise both (T5: 2^18 steps
of 128 sequences for the mixture) and set mesh/dtype as in the distillation configs.
"""

from configs import base

# Metrics differ in scale of training data: few steps for the small tasks, more for the large ones.
STEPS = {"cola": 600, "sst2": 600, "mrpc": 400, "qqp": 2000, "stsb": 600, "mnli": 2000, "qnli": 1000,
         "rte": 300, "wnli": 100, "glue": 3000}


def get_config(task: str = "sst2"):
    if task not in STEPS:
        raise ValueError(f"configs/finetune/glue.py:{task}: use one of {', '.join(STEPS)}.")
    c = base.get_config()
    c.mode = "finetune"
    c.model.source = "miniend"
    c.model.path = "workdirs/small_miniend_e"
    c.tasks.train = "glue" if task == "glue" else f"glue_{task}"
    c.tasks.eval = ("glue_cola,glue_sst2,glue_mrpc,glue_stsb,glue_rte,glue_wnli" if task == "glue"
                    else "glue_mnli_matched" if task == "mnli" else f"glue_{task}")
    c.tasks.eval_split = "validation"
    c.tasks.inputs_length = 128
    c.tasks.targets_length = 8
    c.data.pack = False
    c.data.shuffle_buffer = 10_000
    c.decode.num_beams = 1
    c.decode.batch_size = 64
    base.use_optimizer_of(c, "finetune")  # AdamW 3e-4, constant, no weight decay
    c.train.steps = STEPS[task]
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.eval_every = max(STEPS[task] // 3, 50)
    c.train.checkpoint_every = max(STEPS[task] // 3, 50)
    c.train.keep_checkpoints = 1
    c.train.eval_batches = 4
    return c
