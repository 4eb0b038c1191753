"""Shared settings of the miniature paper comparison (`python -m miniend_jax.experiment`, docs/results.md).

Scale (ours, chosen so that the whole comparison runs in about three hours on 2 CPU cores, and to give the
downstream scores their best chance to see pretraining; docs/results.md reports that so far they do not):
- vocabulary: SentencePiece (unigram, 8,000 pieces + T5's 100 sentinels; the models round to 8,192 ids)
  trained by the runner on the Wikipedia training shards, in place of T5's 32k vocabulary;
- teacher: T5 v1.1 style (gated-GELU, untied head), d_model 256, 4 heads x 64, FFN 1024, 4+4 layers,
  pretrained from scratch on span corruption for TEACHER_STEPS steps: most of the budget;
- students: half the teacher's width and depth (the paper's cut): d_model 128, 2 heads x 64, FFN 512,
  2+2 layers, 1/6.3 of the teacher's forward FLOPs at the training shape; every row the same
  STUDENT_STEPS steps, batch and schedule;
- data: the Wikipedia extract, the last 2 shards held out; 32 sequences of 128 input tokens a step, packed;
- downstream: single-task finetuning, packed, sized in epochs, on low-resource tasks (DOWNSTREAM), each model with
  the seeds FINETUNE_SEEDS, scored once on the full dev set after the last step; the random-init row is
  the student's shape finetuned the same way without any pretraining.
"""

from configs import base

ROOT = "workdirs/experiment"
VOCAB = f"{ROOT}/spm8k.model"
SPM_PIECES = 8000
VOCAB_SIZE = 8192
TEACHER_SHAPE = dict(vocab_size=VOCAB_SIZE, d_model=256, num_heads=4, d_kv=64, d_ff=1024, num_encoder_layers=4,
                     num_decoder_layers=4, dropout_rate=0.0)
STUDENT_SHAPE = dict(vocab_size=VOCAB_SIZE, d_model=128, num_heads=2, d_kv=64, d_ff=512, num_encoder_layers=2,
                     num_decoder_layers=2, dropout_rate=0.0)
TEACHER_STEPS = 700
STUDENT_STEPS = 400
BATCH = 32
TEACHER_WORKDIR = f"{ROOT}/teacher"
GLUE_DIR = "../shared/data/glue"
SUBSET_GLUE_DIR = f"{ROOT}/data/glue_sst2_2k"   # SST-2 with SST2_SUBSET training sentences (written by the runner)
SST2_SUBSET = 2000

# Downstream tasks: (seqio Task, GLUE directory, finetuning steps, decoded tokens). Examples are packed, as T5
# finetunes (unpacked, padding was 2/3 of the compute), into rows of 128 input tokens (T5's: 512), FINETUNE_BATCH rows a
# step: with the runner's vocabulary a row holds about 5 SST-2 or 2.4 STS-B examples, so the steps are
# about 5 epochs of the 2,000 SST-2 sentences and 1 epoch of STS-B's 5,749 pairs.
# Low-resource tasks, where pretraining matters most; see docs/results.md for the tasks tried and left out.
DOWNSTREAM = {
    "sst2_2k": ("glue_sst2", SUBSET_GLUE_DIR, 250, 4),
    "stsb": ("glue_stsb", GLUE_DIR, 300, 5),
}
FINETUNE_SEEDS = (0, 1, 2)
FINETUNE_BATCH = 8


def _pretraining(c, steps: int, eval_every: int):
    c.data.vocab = VOCAB
    c.data.inputs_length = 128
    c.data.shuffle_buffer = 2_000
    base.use_optimizer_of(c, "pretrain")  # relative steps, adamw_scaled 1e-2 (configs/base.py)
    c.optim.warmup_steps = steps // 10
    c.train.steps = steps
    c.train.batch_size = BATCH
    c.train.log_every = 10
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 1
    c.train.eval_every = eval_every
    c.train.eval_batches = 8
    return c


def teacher_config():
    """Span-corruption pretraining of the teacher from scratch."""
    c = base.get_config()
    c.mode = "pretrain"
    c.student.preset = "t5-v1_1-small"
    c.student.overrides.update(TEACHER_SHAPE)
    return _pretraining(c, TEACHER_STEPS, eval_every=TEACHER_STEPS // 5)


def student_config(objective: str):
    """A student row: `objective` is a name of distill.objectives.OBJECTIVES (`pretrain`: from scratch)."""
    c = base.get_config()
    c.mode = "pretrain" if objective == "pretrain" else "distill"
    c.distill.objective = objective
    c.teacher.source = "miniend"
    c.teacher.path = TEACHER_WORKDIR
    c.teacher.preset = "t5-v1_1-small"        # the shape the path holds (teacher.source=preset: tests)
    c.teacher.overrides.update(TEACHER_SHAPE)
    c.student.preset = "t5-v1_1-small"
    c.student.overrides.update(STUDENT_SHAPE)
    # 8 relation heads: 16 dimensions each for the student, 32 for the teacher.
    c.distill.relation_heads = 8
    return _pretraining(c, STUDENT_STEPS, eval_every=STUDENT_STEPS // 4)


def finetune_config(task: str, model_path: str = TEACHER_WORKDIR):
    """One finetuning run of a model on `task` (a key of DOWNSTREAM), scored on the full dev set once,
    after the last step (no checkpoint is chosen on the scored set). `model.source=preset` finetunes the
    student's shape from random weights: the random-init row."""
    seqio_task, glue_dir, steps, decoded = DOWNSTREAM[task]
    c = base.get_config()
    c.mode = "finetune"
    c.model.source = "miniend"
    c.model.path = model_path
    c.model.preset = "t5-v1_1-small"             # model.source=preset: the random-init row
    c.model.overrides.update(STUDENT_SHAPE)
    # No dropout, as in pretraining: with T5's finetuning dropout of 0.1 the pretrained models stayed at
    # chance on SST-2 while random init learned (docs/results.md).
    c.model.dropout_rate = 0.0
    c.data.vocab = VOCAB
    c.data.pack = True
    c.data.shuffle_buffer = 10_000
    c.tasks.glue_dir = glue_dir
    c.tasks.train = seqio_task
    c.tasks.eval = seqio_task
    c.tasks.eval_split = "validation"
    c.tasks.inputs_length = 128
    c.tasks.targets_length = 24                  # the packed targets of a row
    c.decode.max_length = decoded                # one label, or a similarity score like "3.2", and EOS
    c.decode.num_beams = 1
    c.decode.batch_size = 128
    base.use_optimizer_of(c, "finetune")  # AdamW 3e-4, constant: one recipe for every row (configs/base.py)
    c.train.steps = steps
    c.train.batch_size = FINETUNE_BATCH
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.checkpoint_every = steps
    c.train.keep_checkpoints = 1
    c.train.eval_batches = 2
    return c
