"""A 3B teacher (T5 v1.1-XL / Flan-T5-XL shape) into the gated 6L/384H student, interpolated distillation.

Command (TPU v4-64 slice: 32 chips on 8 hosts; the launcher runs it on every host, every path in a bucket:
README.md, "Scaling to a pod"):
  python -m miniend_jax.launch tpu --tpu=NAME --zone=ZONE -- --config=configs/t5_3b_interp.py \
      --workdir=gs://BUCKET/3b_interp --config.teacher.path=gs://BUCKET/flan-t5-xl \
      --config.data.vocab=gs://BUCKET/spiece.model --config.data.tfds_data_dir=gs://BUCKET/tfds
Expected: about 20 hours for 100k steps of 1024 x 128 tokens (teacher forward dominates: ~36x the
student's FLOPs). Expected result: a student above the one distilled without interpolation from the
same teacher (the capacity gap is what interpolation addresses; the paper's 3B numbers are not available
offline).

Interpolated distillation (our definition, METHOD.md): every target is (1 - a_t) stopgrad(P_student) +
a_t P_teacher, a_t rising linearly from 0.1 to 1 over the first 20% of steps. Mesh: 32 devices as
data 4 x fsdp 8 (teacher 6 GB in bfloat16 sharded 8 ways); remat on in the student; both models scan
their layers. Plan it first (no TPU needed): `python -m miniend_jax.main` with the run's arguments and
--config.mode=plan (a local --workdir); it reports 2.9 GiB per chip.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.mode = "distill"
    c.teacher.source = "hf"
    c.teacher.path = "/path/to/flan-t5-xl"
    c.teacher.preset = "t5-v1_1-xl"        # the shape the path must hold
    c.teacher.param_dtype = "bfloat16"
    c.teacher.dtype = "bfloat16"
    c.teacher.scan_layers = True           # per-layer temporaries freed each iteration; fast compiles
    c.student.preset = "miniend-6l-384h-gated"
    c.student.dtype = "bfloat16"
    c.student.overrides.remat = "full"
    c.student.scan_layers = True
    c.data.source = "c4"
    c.data.inputs_length = 128
    c.distill.objective = "miniend_e"
    c.distill.interpolation.schedule = "linear"
    c.distill.interpolation.start = 0.1
    c.distill.interpolation.steps = 20_000
    c.train.steps = 100_000
    c.train.batch_size = 1024
    c.train.log_every = 100
    c.train.checkpoint_every = 1_000
    c.train.eval_every = 5_000
    c.plan.hbm_gib = 32.0               # TPU v4: 32 GiB HBM per chip
    c.mesh.data = 4
    c.mesh.fsdp = 8
    c.mesh.tensor = 1
    c.export.at_end = True
    return c
