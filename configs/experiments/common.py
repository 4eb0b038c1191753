"""Shared settings of the miniature paper comparison (`python -m miniend_jax.experiment`, docs/results.md).

Scale (ours, chosen so that the whole comparison runs in about two hours on 2 CPU cores):
- teacher: T5 v1.1 style (gated-GELU, untied head), d_model 256, 4 heads x 64, FFN 1024, 4+4 layers, the real
  T5 vocabulary: 25.9M parameters; pretrained from scratch on span corruption for TEACHER_STEPS steps;
- students: half the depth and 5/16 of the width (d_model 80, 2 heads x 40, FFN 320, 2+2 layers): 1/8.7 of
  the teacher's forward FLOPs at the training shape (128 input, 29 target tokens), the output head over the
  32k vocabulary included (half width and half depth, the paper's cut, would leave 1/4.6 here: at this size
  the head is half of the FLOPs); every row the same STUDENT_STEPS steps, batch and schedule;
- data: the Wikipedia extract, 98 shards to train on and the last 2 held out; 32 sequences of 128 input
  tokens a step, packed.
"""

from configs import base

TEACHER_SHAPE = dict(d_model=256, num_heads=4, d_kv=64, d_ff=1024, num_encoder_layers=4, num_decoder_layers=4,
                     dropout_rate=0.0)
STUDENT_SHAPE = dict(d_model=80, num_heads=2, d_kv=40, d_ff=320, num_encoder_layers=2, num_decoder_layers=2,
                     dropout_rate=0.0)
TEACHER_STEPS = 400
STUDENT_STEPS = 100
BATCH = 32
TEACHER_WORKDIR = "workdirs/experiment/teacher"


def _pretraining_data(c, steps: int, eval_every: int):
    c.data.inputs_length = 128
    c.data.shuffle_buffer = 2_000
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = steps // 10
    c.train.steps = steps
    c.train.batch_size = BATCH
    c.train.log_every = 5
    c.train.checkpoint_every = 50
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
    return _pretraining_data(c, TEACHER_STEPS, eval_every=100)


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
    # 8 relation heads: 10 dimensions each for the student (the default 32 does not divide its 80).
    c.distill.relation_heads = 8
    return _pretraining_data(c, STUDENT_STEPS, eval_every=STUDENT_STEPS // 5)


GLUE_EVAL = "glue_cola,glue_sst2,glue_mrpc,glue_stsb,glue_rte"
GLUE_STEPS = 100
SAMSUM_STEPS = 30
SAMSUM_TEST_EXAMPLES = 200


def _finetuning(c, model_path: str, steps: int, batch_size: int):
    c.mode = "finetune"
    c.model.source = "miniend"
    c.model.path = model_path
    c.data.pack = False
    c.data.shuffle_buffer = 10_000
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 0
    c.optim.decay = "constant"
    c.optim.weight_decay = 0.0
    c.train.steps = steps
    c.train.batch_size = batch_size
    c.train.log_every = 10
    c.train.eval_every = 0             # scored once, at the end: no checkpoint is chosen on the scored set
    c.train.checkpoint_every = steps
    c.train.keep_checkpoints = 1
    c.train.eval_batches = 2
    return c


def glue_config(model_path: str):
    """One finetuning run on the GLUE tasks with local training data but WNLI, at equal rates (proportional
    mixing would leave RTE and MRPC about a hundred examples each in these steps), scored on the CoLA, SST-2,
    MRPC, STS-B and RTE dev sets with greedy decoding."""
    c = _finetuning(base.get_config(), model_path, GLUE_STEPS, BATCH)
    c.tasks.train = "glue_equal"
    c.tasks.eval = GLUE_EVAL
    c.tasks.eval_split = "validation"
    c.tasks.inputs_length = 128
    c.tasks.targets_length = 8
    c.decode.num_beams = 1
    c.decode.batch_size = 64
    return c


def samsum_config(model_path: str):
    """SAMSum: trained on rows 0-717 of its validation split (the local file has no training split), scored
    on the first SAMSUM_TEST_EXAMPLES test dialogues with greedy decoding."""
    c = _finetuning(base.get_config(), model_path, SAMSUM_STEPS, 16)
    c.tasks.train = "summ_samsum"
    c.tasks.eval = "summ_samsum"
    c.tasks.eval_split = "test"
    c.tasks.eval_examples = SAMSUM_TEST_EXAMPLES
    c.tasks.best_metric = "summ_samsum/rougeL"
    c.tasks.inputs_length = 256
    c.tasks.targets_length = 64
    c.decode.num_beams = 1
    c.decode.batch_size = 50
    return c
