"""The offline demo's runs (`make demo` = `python -m miniend_jax.demo`), one config per stage.

The demo first writes its corpus (CPython's own documentation: the reference topics of `pydoc_data` and
the standard library's docstrings), a SentencePiece vocabulary trained on it, and the downstream task
(which of 12 standard-library modules or packages a docstring documents) under workdirs/demo. Each stage can then
also be run by hand:

  python -m miniend_jax.main --config=configs/demo.py:teacher   --workdir=workdirs/demo/teacher
  python -m miniend_jax.main --config=configs/demo.py:miniend_e --workdir=workdirs/demo/miniend_e
  python -m miniend_jax.main --config=configs/demo.py:scratch   --workdir=workdirs/demo/scratch
  python -m miniend_jax.main --config=configs/demo.py:finetune  --workdir=workdirs/demo/ft_miniend_e_s0 \
      --config.model.path=workdirs/demo/miniend_e --config.seed=0
  python -m miniend_jax.main --config=configs/demo.py:finetune_random_init --workdir=workdirs/demo/ft_random_init_s0
Expected: the whole demo in about 8 minutes on 2 CPU cores (measured: README.md); the teacher finetunes
well above the random-init row (about +17 points, the 95% interval excluding 0); the MiniEnD-E student
ends with a lower held-out span-corruption loss than the same student trained from scratch for the same
steps. Each model is finetuned with the seeds FINETUNE_SEEDS by one recipe, the random-init row with its
own random initialisation each.

Optimizers (configs/base.py): pretraining and distillation with relative steps (adamw_scaled, 1e-2);
finetuning with AdamW 3e-4, constant, for every row. With AdamW at 3e-3 for pretraining, the teacher
finetuned below random init (README.md, "Two commands").
"""

from configs import base

ROOT = "workdirs/demo"
VOCAB = f"{ROOT}/spm.model"
SPM_PIECES = 2000                    # + 100 sentinels = 2100 ids; the models round up to 2176
TEACHER = dict(vocab_size=2176, d_model=128, num_heads=4, d_kv=32, d_ff=384, num_encoder_layers=3,
               num_decoder_layers=3, dropout_rate=0.0)
# About 1/5 of the teacher's forward FLOPs: half the width and two thirds of the depth.
STUDENT = dict(vocab_size=2176, d_model=64, num_heads=2, d_kv=32, d_ff=192, num_encoder_layers=2,
               num_decoder_layers=2, dropout_rate=0.0)
STAGES = ("teacher", "miniend_e", "scratch", "finetune", "finetune_random_init")
FINETUNE_SEEDS = (0, 1, 2, 3, 4)
FINETUNE_STEPS = 300                   # of FINETUNE_BATCH examples: 3.5 epochs of the 1,373 training docstrings
FINETUNE_BATCH = 16
WORKERS = 2                            # runs at a time: the small runs leave a core idle (measured: 23% less time than 1)
TASK_MODULES = 12                      # which of the 12 largest stdlib modules and packages a docstring documents
TASK_DEV_EVERY = 3                     # every 3rd docstring of a module in dev (about 700 of them)
TASK_DIR = f"{ROOT}/docs_module"       # written by the demo
TASK = "cls_docs_module"


def _common(c):
    c.data.files = f"{ROOT}/corpus/*.txt"
    c.data.format = "text"
    c.data.validation_files = 1          # corpus/b_heldout.txt
    c.data.vocab = VOCAB
    c.data.inputs_length = 64
    c.data.shuffle_buffer = 2_000
    c.train.batch_size = 32
    c.train.log_every = 20
    c.train.eval_every = 50
    c.train.eval_batches = 8
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 1
    c.mesh.data = -1
    c.jax_cache_dir = f"{ROOT}/jax_cache"  # the students' finetuning runs share their compiled programs
    return c


def get_config(stage: str = "teacher"):
    if stage not in STAGES:
        raise ValueError(f"configs/demo.py:{stage}: use one of {', '.join(STAGES)}.")
    c = _common(base.get_config())
    c.student.preset = "t5-v1_1-small"
    base.use_optimizer_of(c, "pretrain")  # relative steps: adamw_scaled 1e-2
    c.optim.warmup_steps = 20
    if stage == "teacher":
        c.mode = "pretrain"
        c.student.overrides.update(TEACHER)
        c.train.steps = 320
        return c
    c.student.overrides.update(STUDENT)
    c.train.steps = 240
    if stage == "scratch":
        c.mode = "pretrain"
        return c
    if stage == "miniend_e":
        c.mode = "distill"
        c.teacher.source = "miniend"
        c.teacher.path = f"{ROOT}/teacher"
        c.teacher.preset = "t5-v1_1-small"
        c.teacher.overrides.update(TEACHER)
        c.distill.objective = "miniend_e"
        c.distill.relation_heads = 16
        return c
    # finetune: any of the three (or, finetune_random_init, the student's shape with no pretraining) on
    # the module-classification task, scored by accuracy and macro-F1.
    c.mode = "finetune"
    c.model.source = "miniend"
    c.model.path = f"{ROOT}/miniend_e"
    if stage == "finetune_random_init":
        c.model.source, c.model.path = "preset", ""
        c.model.preset = "t5-v1_1-small"
        c.model.overrides.update(STUDENT)
    c.model.dropout_rate = 0.0
    c.tasks.classification_dirs = TASK_DIR
    c.tasks.train = TASK
    c.tasks.eval = TASK
    c.tasks.best_metric = f"{TASK}/accuracy"
    c.tasks.inputs_length = 48             # the first 48 tokens of a docstring's first paragraph (80% whole)
    c.tasks.targets_length = 8
    c.data.pack = False
    c.decode.batch_size = 100
    base.use_optimizer_of(c, "finetune")  # AdamW 3e-4, constant, the same for every row
    c.train.steps = FINETUNE_STEPS
    c.train.batch_size = FINETUNE_BATCH
    c.train.eval_every = 0               # scored once, after the last step: no checkpoint chosen on the dev set
    c.train.checkpoint_every = FINETUNE_STEPS
    c.train.eval_batches = 1            # the dev loss (logged); the scores decode the whole dev set
    return c
