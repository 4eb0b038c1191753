"""Base configuration: every field and its default. Runnable configs start from `get_config()`.

Command (a smoke run: random t5-small-shaped teacher, tiny student, 20 steps on the Wikipedia extract):
  python -m miniend_jax.main --config=configs/base.py --workdir=/tmp/miniend_base \
      --config.teacher.preset=t5-small --config.student.preset=miniend-6l-384h --config.train.steps=20 \
      --config.train.batch_size=8
Expected: about 2 minutes on 2 CPU cores; the loss falls; the result means nothing (random teacher).

Defaults follow METHOD.md: MiniEnD-E, 32 relation heads, last layer of each stack, temperature 1,
unweighted terms; weight decay 0.01 / linear decay with 1% warm-up / clip 5.0.

The optimizer depends on the mode (`OPTIMIZER_BY_MODE`, set with `use_optimizer_of`): pretraining and
distillation take relative steps (`adamw_scaled` at 1e-2: Adam's direction scaled by each parameter's RMS,
as T5's Adafactor and nanoT5), because AdamW at an absolute rate moves T5's query projections 30-60
times further, relative to their size, than its embeddings, and the pretrained model then finetuned
below random weights (README.md, "Two commands"); finetuning takes AdamW at 3e-4, constant (the upper
end of transformers' recommended range for T5; the demo's recipe). The paper's own AdamW at 3e-4:
`--config.optim.name=adamw --config.optim.learning_rate=3e-4`. The `optim` fields below hold the
pretraining entry of `OPTIMIZER_BY_MODE` (a test keeps the two equal).
"""

import ml_collections

# What `use_optimizer_of(c, mode)` sets in `c.optim` (see the module docstring for the evidence).
OPTIMIZER_BY_MODE = {
    "pretraining": dict(name="adamw_scaled", learning_rate=1e-2, weight_decay=0.01, warmup_fraction=0.01,
                        warmup_steps=-1, decay="linear"),
    "finetune": dict(name="adamw", learning_rate=3e-4, weight_decay=0.0, warmup_steps=0, decay="constant"),
}


def use_optimizer_of(c: ml_collections.ConfigDict, mode: str) -> ml_collections.ConfigDict:
    """Sets `c.optim` to the optimizer of `mode` (distill, pretrain or finetune); returns `c`."""
    c.optim.update(OPTIMIZER_BY_MODE["finetune" if mode == "finetune" else "pretraining"])
    return c


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "distill"                 # distill | pretrain | finetune | evaluate | infer | export | plan
    c.seed = 0
    c.overwrite_config = False         # continue a workdir whose config.json differs from this config
    c.jax_cache_dir = ""               # JAX's persistent compilation cache (as MaxText's): "" off; a restart or a
                                       # run of the same shapes reads compiled programs back instead of compiling

    c.teacher = ml_collections.ConfigDict()
    c.teacher.source = "preset"        # hf (a HF directory) | miniend (a miniend_jax workdir) | preset (random: tests)
    c.teacher.path = ""
    c.teacher.preset = "t5-base"
    c.teacher.overrides = ml_collections.ConfigDict({})  # config fields of the preset's family; source=preset only
    c.teacher.dtype = "float32"        # compute dtype of the teacher forward
    c.teacher.param_dtype = "float32"  # "bfloat16" halves the teacher's memory
    c.teacher.scan_layers = False      # scan over layers: one compiled layer per stack (fast compiles at 3B)

    # The model to finetune or evaluate (modes finetune / evaluate): a distilled student, a teacher, a baseline.
    c.model = ml_collections.ConfigDict()
    c.model.source = "miniend"         # miniend (its workdir's newest checkpoint) | hf (a HF directory) | preset
    c.model.path = ""
    c.model.preset = "t5-small"        # source=preset: random weights (tests)
    c.model.overrides = ml_collections.ConfigDict({})
    c.model.dropout_rate = 0.1         # while finetuning (T5: 0.1)
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.scan_layers = False

    c.student = ml_collections.ConfigDict()
    c.student.preset = "miniend-6l-384h"
    c.student.overrides = ml_collections.ConfigDict({"dropout_rate": 0.0})  # any field of the preset family's config
    c.student.init = "random"          # random | teacher_layers (our option; the paper does not say)
    c.student.dtype = "float32"        # compute dtype; "bfloat16" on accelerators
    c.student.param_dtype = "float32"
    c.student.scan_layers = False      # checkpoints keep this layout; HF export/import convert either way

    c.data = ml_collections.ConfigDict()
    c.data.source = "files"            # files | hf (a HF dataset: tasks/hf_text.py) | c4 (TFDS, for pod runs)
    c.data.files = "../shared/data/enwiki_2015_extract/AA/wiki_*.gz"
    c.data.format = "auto"             # auto | text | jsonl | wikiextractor
    c.data.text_field = "text"         # jsonl field, or the HF dataset's text column
    c.data.hf_path = ""                # source=hf: a save_to_disk directory, or .parquet/.jsonl/.arrow globs
    c.data.hf_split = "train"
    c.data.hf_shards = 16              # jsonl files the text is written to (per-host sharding, validation_files)
    c.data.validation_files = 2        # last N files (sorted) held out
    c.data.vocab = "../shared/data/t5_spiece/spiece.model"
    c.data.extra_ids = 100
    c.data.inputs_length = 128
    c.data.targets_length = 0          # 0: what span corruption produces for inputs_length
    c.data.pack = True
    c.data.shuffle_buffer = 10_000
    # Damaged input: in a corpus (unreadable files, invalid UTF-8, overlong lines, jsonl without text) and in
    # a Task's files (GLUE, summarization, classification, tasks.hf: a line that is not UTF-8 or JSON, wrong
    # fields, a missing text or label). skip: leave it out, print the count of each file or split with the
    # first lines and their fix, before training | error: stop at the first one, naming file, line and fix.
    # Default skip: one bad line in a large corpus should not stop a long run, and no row goes uncounted;
    # set error where every row must be scored (a benchmark's dev/test numbers). `infer` file inputs always
    # stop at a damaged line (each output line answers one input line).
    c.data.on_bad_input = "skip"
    # On resume, when the corpus files differ from those the checkpoint's input position refers to (a file
    # added, removed, replaced or reordered, data.validation_files changed; appending is always fine):
    # error (refuse, naming the change) | restart (resume the state, read the current files from the start).
    # miniend_jax/train/resume.py states the rule for each change.
    c.data.on_input_change = "error"
    c.data.max_line_chars = 1_000_000
    c.data.objective = "span_corruption"  # span_corruption (T5) | denoising (BART: infilling + sentence permutation)
    c.data.noise_density = 0.15        # span_corruption: the share of tokens masked
    c.data.mean_noise_span_length = 3.0
    c.data.mask_ratio = 0.3            # denoising: tokens masked, in spans of Poisson(poisson_lambda) lengths
    c.data.poisson_lambda = 3.0
    c.data.permute_sentences = True    # denoising: shuffle each block's sentences in the inputs
    c.data.tfds_name = "c4/en:3.1.0"
    c.data.tfds_data_dir = ""

    # Downstream Tasks (modes finetune / evaluate): see tasks/glue.py and tasks/summarization.py for names.
    c.tasks = ml_collections.ConfigDict()
    c.tasks.train = "glue_sst2"        # a Task or Mixture (e.g. "glue")
    c.tasks.eval = "glue_sst2"         # comma-separated Tasks scored by decoding
    c.tasks.eval_split = "validation"   # "test": GLUE's unlabelled test sets, for mode=infer (scoring refuses them)
    c.tasks.eval_examples = 0          # 0: the whole split
    c.tasks.best_metric = ""           # "task/metric" keeping the best checkpoint; "": first eval task's main metric
    c.tasks.inputs_length = 128
    c.tasks.targets_length = 8
    c.tasks.glue_source = "local"      # local (a GLUE download directory) | tfds
    c.tasks.glue_dir = "../shared/data/glue"
    c.tasks.summarization_source = "local"
    c.tasks.summarization_dir = "../shared/data"
    c.tasks.summarization_instruction = "summarize:"  # opens each document (T5's format); "" for BART
    c.tasks.tfds_data_dir = ""
    c.tasks.classification_dirs = ""  # comma-separated folders of train.tsv / dev.tsv (text<TAB>label): cls_<name>
    # HF datasets as Tasks hf_<name>: c.tasks.hf.<name> = dict(path, splits, inputs, targets, label_names, metrics)
    # (tasks/hf_tasks.py has an example).
    c.tasks.hf = ml_collections.ConfigDict()

    c.decode = ml_collections.ConfigDict()
    c.decode.num_beams = 1             # 1: greedy; T5 uses 4 beams for summarization
    c.decode.length_penalty = 0.6      # beam search only: alpha, T5's value (HF's default is 1.0)
    c.decode.length_penalty_rule = "auto"  # t5: t5x's beam search, log-prob / ((5 + len) / 6) ** alpha;
    #   hf: transformers generate's, log-prob / len ** alpha; auto: hf with the alpha of a HF model's
    #   generation_config.json where it sets length_penalty, else t5 (build.decode_settings)
    c.decode.max_length = 0            # generated tokens; 0: tasks.targets_length
    c.decode.batch_size = 32
    # generate's logits processors (decoding.LogitsRules), in the pipeline's ids; with length_penalty_rule
    # "auto" a HF model's own settings (generation_config.json, or config.json of transformers 4: BART's
    # forced BOS/EOS and 3-gram blocking) replace these and early_stopping.
    c.decode.min_length = 0            # EOS banned while the sequence (start token included) is shorter
    c.decode.no_repeat_ngram_size = 0  # n: no n-gram twice; 0 = off
    c.decode.forced_bos_token_id = -1  # the first generated token; -1 = none
    c.decode.forced_eos_token_id = -1  # EOS as the last of max_length tokens; -1 = none
    c.decode.early_stopping = False    # hf rule: stop when every beam slot is finished

    # mode=infer: decode a Task's tasks.eval_split split or a file with config.model (decode.* as above).
    c.infer = ml_collections.ConfigDict()
    c.infer.input = ""                 # a Task or Mixture name, or a file: .jsonl (field infer.field) or one input per line
    c.infer.field = "inputs"           # .jsonl: the field holding the input text
    c.infer.output = ""                # "": <workdir>/predictions.jsonl
    c.infer.examples = 0               # 0: every input

    c.distill = ml_collections.ConfigDict()
    c.distill.objective = "miniend_e"
    c.distill.relation_heads = 32
    c.distill.teacher_layers = ml_collections.ConfigDict({"encoder": -1, "decoder": -1})
    c.distill.student_layers = ml_collections.ConfigDict({"encoder": -1, "decoder": -1})
    c.distill.temperature = 1.0
    c.distill.weights = ml_collections.ConfigDict(
        {"logit": 1.0, "encoder_self": 1.0, "decoder_self": 1.0, "cross": 1.0, "ground_truth": 0.0})
    c.distill.interpolation = ml_collections.ConfigDict(
        {"schedule": "constant",       # constant (plain MiniEnD) | linear | cosine
         "start": 0.1,                 # a_0
         "steps": 0,                   # steps for a_t to reach 1
         "space": "probability"})      # probability (METHOD.md) | logit (TAID)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw_scaled"      # adamw | adamw_scaled | adafactor (miniend_jax/train/state.py)
    c.optim.learning_rate = 1e-2       # adamw_scaled, adafactor: relative to each parameter's RMS
    c.optim.weight_decay = 0.01
    c.optim.warmup_fraction = 0.01
    c.optim.warmup_steps = -1          # >= 0 overrides warmup_fraction
    c.optim.decay = "linear"           # linear | cosine | constant
    c.optim.end_lr_fraction = 0.0
    c.optim.clip_norm = 5.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-6                 # Adam's (adamw, adamw_scaled)
    c.optim.min_param_scale = 1e-3     # adamw_scaled, adafactor: a step is relative to max(this, RMS(param))
    c.optim.adafactor = ml_collections.ConfigDict({  # t5x's settings for T5
        "decay_rate": 0.8,             # second moments decay as 1 - (step + 1) ** -decay_rate
        "clipping_threshold": 1.0,     # the update's RMS at most this; 0: no clipping
        "momentum": 0.0,               # 0: none (T5); t5x's beta1 otherwise
        "min_dim_size_to_factor": 128, # factor the second moments of arrays with two dimensions this large
        "eps": 1e-30})                 # added to the squared gradient

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 1024          # global, in examples
    c.train.microbatches = 1
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3
    # Asynchronous saves overlap writing with training; a kill while a save is in flight loses that save
    # too (at most one interval plus the steps run during the write). False: at most one interval.
    c.train.async_checkpoints = True
    c.train.eval_every = 0             # 0: evaluate at the end only
    c.train.eval_batches = 20
    c.train.max_consecutive_nonfinite = 20   # stop after this many skipped (NaN/inf) updates in a row

    c.debug = ml_collections.ConfigDict()
    c.debug.nan_loss_at_step = -1      # fault injection for tests: a NaN loss at this step

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    # Logical axis -> mesh axes (parallel.DEFAULT_RULES; a test keeps the two equal): "" replicates,
    # "fsdp" or "data,fsdp" shards. E.g. --config.mesh.rules.embed='' keeps the embedding axis whole.
    c.mesh.rules = ml_collections.ConfigDict({
        "batch": "data,fsdp", "vocab": "tensor", "mlp": "tensor", "joined_kv": "tensor", "embed": "fsdp",
        "length": "", "relpos_buckets": "", "relpos_heads": "", "layers": ""})

    # Multi-host runs: every host runs the same command. With enabled=True and no coordinator_address,
    # jax.distributed.initialize() finds the cluster itself (Cloud TPU, SLURM, Open MPI, or the
    # JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables).
    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = False
    c.distributed.coordinator_address = ""  # "host:port" of process 0, to start processes by hand
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.distributed.cpu_collectives = "gloo"  # cross-process collectives of CPU devices (tests, CPU clusters)
    c.distributed.timeout_seconds = 300

    # mode=plan: compile this config's train step for `devices` devices without allocating anything
    # (CPU-simulated), and report per-device memory and FLOPs (miniend_jax/modes/plan.py).
    c.plan = ml_collections.ConfigDict()
    c.plan.step = "distill"            # distill | pretrain | finetune: whose train step
    c.plan.devices = 0                 # 0: data * fsdp * tensor of the mesh (all must then be set)
    c.plan.hbm_gib = 16.0              # memory per device (TPU v5e 16, v4 32, v5p 95; H100 80)

    c.export = ml_collections.ConfigDict()
    c.export.path = ""                 # default: <workdir>/hf_student
    c.export.at_end = False
    return c
