"""Every check of a config that needs no weights and no data, run before anything is read, compiled or
written; and the workdir's `config.json` (the resolved config, written once the checks have passed).

Each rule lives here once, next to the settings it checks, unless the object that owns the setting checks
it when it is built (`DistillSpec` checks the objective's weights and temperature, `learning_rate_schedule`
the decay, `parallel.mesh_shape` the mesh); `validate_config` builds those objects so that their checks
also run first. Every error is a `ConfigError` naming the field, the value and the fix.
"""

from __future__ import annotations

import dataclasses

import json

from miniend_jax import files
from miniend_jax.errors import ConfigError, check

MODES = ("distill", "pretrain", "finetune", "evaluate", "infer", "export", "plan")
# Fields that may change when a run in an existing workdir is continued.
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.eval_every", "train.eval_batches",
                     "data.on_input_change",
                     "export.path", "export.at_end", "overwrite_config", "jax_cache_dir", "distributed.enabled",
                     "distributed.coordinator_address", "distributed.num_processes", "distributed.process_id",
                     "distributed.cpu_collectives", "distributed.timeout_seconds",
                     # The layout over devices: orbax restores the state into the new shardings.
                     "mesh.data", "mesh.fsdp", "mesh.tensor")


def validate_config(config, *, paths_here: bool = True) -> None:
    """Checks field types, ranges, names and paths of `config` for its `mode`.

    `mode=plan` runs every check of the mode it plans (`plan.step`), with `paths_here=False`: a plan is
    often made before the weights, vocabulary and data are on the machine, so a path that does not exist
    here is not checked (one that exists is, like the run's).

    Reads only small files (the SentencePiece model, a checkpoint's meta); starts no JAX computation, so it
    may run before `jax.distributed.initialize`.

    Raises:
      ConfigError: naming the field, the value and the fix.
    """
    check(config.mode in MODES, "mode", config.mode, f"use one of {', '.join(MODES)}.")
    check(isinstance(config.get("jax_cache_dir", ""), str), "jax_cache_dir", config.get("jax_cache_dir"),
          "give a directory, or '' for no compilation cache.")
    if config.mode == "export":
        _validate_export(config)
        return
    if config.mode == "plan":
        _validate_plan(config.plan)
        validate_config(planned_config(config), paths_here=False)
        return
    if config.mode == "infer":
        _validate_infer(config)
        return
    if config.mode in ("finetune", "evaluate"):
        _validate_downstream(config, paths_here)
        if config.mode == "evaluate":
            return
    else:
        _validate_pretraining(config, paths_here)
    _validate_training(config, paths_here)


def checked_here(path: str, paths_here: bool) -> bool:
    """Whether the checks read `path`: always for a run; for a plan (`paths_here=False`) only a local path
    that exists (a plan reads nothing from object storage: it is often made offline, before the inputs
    are copied)."""
    return paths_here or (not files.is_cloud(path) and files.exists(path))


def planned_config(config):
    """The config of the run a `mode=plan` config plans: a copy with `mode = plan.step`."""
    planned = config.copy_and_resolve_references()
    with planned.unlocked():
        planned.mode = config.plan.step
    return planned


def _validate_export(config) -> None:
    """export: the tokenizer written beside the weights is a SentencePiece model (or none: `data.vocab=''`)."""
    if config.data.vocab:
        check_vocab_file(config.data.vocab, fix="or set data.vocab='' to export the weights without a tokenizer.")


def _validate_plan(p) -> None:
    check(p.step in ("distill", "pretrain", "finetune"), "plan.step", p.step,
          "use 'distill', 'pretrain' or 'finetune': the mode whose train step to plan.")
    check(isinstance(p.devices, int) and p.devices >= 0, "plan.devices", p.devices,
          "use the number of devices (chips) to plan for, or 0 for the product of the mesh sizes.")
    check(p.hbm_gib > 0, "plan.hbm_gib", p.hbm_gib, "use the accelerator's memory per device in GiB.")


def validate_model_section(section, role: str, paths_here: bool = True) -> None:
    """A model section (`teacher` or `model`): its source, and its path (when `paths_here`) or preset."""
    from miniend_jax.build import check_model_source
    from miniend_jax.models.registry import get_preset
    check_model_source(section, role)
    if section.source in ("hf", "miniend"):
        check(bool(section.path) and (not paths_here or files.isdir(section.path)), f"{role}.path", section.path,
              "point it at an existing directory (a HF checkpoint or a miniend_jax workdir).")
    else:
        get_preset(section.preset)


PRETRAINING_OBJECTIVES = ("span_corruption", "denoising")   # data.objective: tasks/span_corruption.py, tasks/denoising.py


def _validate_pretraining(config, paths_here: bool = True) -> None:
    """distill and pretrain: the teacher, the student, the span-corruption data and the distillation spec."""
    from miniend_jax.distill.objectives import OBJECTIVES, check_interpolation
    from miniend_jax.distill.student_init import INIT_MODES
    from miniend_jax.models.registry import get_preset
    s, d = config.student, config.data
    if config.mode == "distill":
        check(config.distill.objective != "pretrain", "distill.objective", config.distill.objective,
              f"use one of {', '.join(o for o in OBJECTIVES if o != 'pretrain')} (or mode=pretrain).")
        validate_model_section(config.teacher, "teacher", paths_here)
    get_preset(s.preset)
    check(s.init in INIT_MODES, "student.init", s.init, f"use one of {', '.join(INIT_MODES)}.")
    if s.init == "teacher_layers":
        check(config.mode == "distill", "student.init", s.init,
              "'teacher_layers' needs a teacher; use mode=distill or student.init='random'.")
    check(d.source in ("files", "hf", "c4"), "data.source", d.source, "use 'files', 'hf' or 'c4'.")
    if d.source == "hf":
        check(bool(d.hf_path), "data.hf_path", d.hf_path,
              "point it at a save_to_disk directory or at .parquet/.jsonl/.arrow files.")
        check(isinstance(d.hf_shards, int) and d.hf_shards > d.validation_files, "data.hf_shards", d.hf_shards,
              f"use more files than data.validation_files={d.validation_files} (at least one for training).")
        check(bool(d.text_field), "data.text_field", d.text_field, "name the dataset's text column.")
    if d.source == "files":  # the held-out files leave at least one for training
        from tasks.pretraining import resolve_files, split_files
        try:
            corpus = resolve_files(d.files) if paths_here or not files.is_cloud(d.files) else []
        except ConfigError:
            if paths_here:
                raise
            corpus = []  # a plan made before the corpus is on this machine
        if corpus:
            split_files(corpus, d.validation_files)
    check(d.format in ("auto", "text", "jsonl", "wikiextractor"), "data.format", d.format,
          "use 'auto', 'text', 'jsonl' or 'wikiextractor'.")
    _check_on_bad_input(d)
    check(isinstance(d.inputs_length, int) and d.inputs_length >= 8, "data.inputs_length", d.inputs_length,
          "use an integer >= 8.")
    check(d.objective in PRETRAINING_OBJECTIVES, "data.objective", d.objective,
          f"use one of {', '.join(PRETRAINING_OBJECTIVES)} (T5's span corruption, BART's denoising).")
    if d.objective == "denoising":
        check(d.source != "c4", "data.objective", d.objective,
              "denoising reads local or HF-dataset text (data.source 'files' or 'hf'); C4 runs use span_corruption.")
        check(0 < d.mask_ratio < 1, "data.mask_ratio", d.mask_ratio, "use a value in (0, 1), BART: 0.3.")
        check(d.poisson_lambda > 0, "data.poisson_lambda", d.poisson_lambda, "use a positive mean span length, BART: 3.")
        check(isinstance(d.permute_sentences, bool), "data.permute_sentences", d.permute_sentences, "use True or False.")
        check(d.targets_length <= 0 or d.targets_length >= d.inputs_length, "data.targets_length", d.targets_length,
              f"denoising reconstructs the whole chunk: use >= data.inputs_length={d.inputs_length}, or 0 for that.")
    else:
        import miniend_jax.checkpoints.bpe as bpe
        check(not bpe.is_bpe(d.vocab), "data.objective", d.objective,
              f"span corruption needs T5's sentinel ids, which the byte-level BPE tokenizer data.vocab={d.vocab!r} "
              "has not (its top ids are ordinary tokens): use data.objective='denoising', BART's objective.")
        check(0 < d.noise_density < 1, "data.noise_density", d.noise_density, "use a value in (0, 1), T5: 0.15.")
        check(d.mean_noise_span_length >= 1, "data.mean_noise_span_length", d.mean_noise_span_length,
              "use a value >= 1 (tokens per noise span), T5: 3.")
        from tasks.lengths import lengths_for_inputs
        _, produced = lengths_for_inputs(d.inputs_length, d.noise_density, d.mean_noise_span_length)
        check(d.targets_length <= 0 or d.targets_length >= produced, "data.targets_length", d.targets_length,
              f"span corruption of data.inputs_length={d.inputs_length} makes targets of {produced} tokens (with "
              f"EOS); use data.targets_length >= {produced}, or 0 for exactly that.")
    from miniend_jax.build import distill_spec
    distill_spec(config)  # the objective, its weights and the temperature (DistillSpec checks them)
    interp = config.distill.interpolation
    check_interpolation(interp.start, interp.steps, interp.schedule)


def _check_on_bad_input(d) -> None:
    """`data.on_bad_input`: what a damaged row or file of the input does (`tasks/task_files.py`)."""
    from tasks.task_files import POLICIES
    check(d.on_bad_input in POLICIES, "data.on_bad_input", d.on_bad_input,
          "use 'skip' (leave damaged rows out and count them) or 'error' (stop at the first one).")


def _validate_training(config, paths_here: bool = True) -> None:
    """Every mode that trains: the vocabulary, the loop's counts and the optimizer."""
    from miniend_jax.train.state import make_optimizer
    tr = config.train
    if checked_here(config.data.vocab, paths_here):
        check_vocab_file(config.data.vocab)
    from miniend_jax.train.resume import INPUT_CHANGE_POLICIES
    check(config.data.on_input_change in INPUT_CHANGE_POLICIES, "data.on_input_change", config.data.on_input_change,
          f"use one of {', '.join(INPUT_CHANGE_POLICIES)}.")
    for field in ("steps", "batch_size", "microbatches", "log_every", "checkpoint_every", "keep_checkpoints",
                  "max_consecutive_nonfinite"):
        check(isinstance(tr[field], int) and tr[field] > 0, f"train.{field}", tr[field], "use a positive integer.")
    check(tr.batch_size % tr.microbatches == 0, "train.microbatches", tr.microbatches,
          f"must divide train.batch_size={tr.batch_size}.")
    check(config.optim.learning_rate > 0, "optim.learning_rate", config.optim.learning_rate, "use a positive value.")
    make_optimizer(config.optim, tr.steps)  # the decay and warm-up (learning_rate_schedule checks them)


def _validate_downstream(config, paths_here: bool = True) -> None:
    """finetune and evaluate: the model, the Tasks and the decoding settings."""
    from miniend_jax.inputs import classification_dirs, eval_task_names
    m, t, dec = config.model, config.tasks, config.decode
    validate_model_section(m, "model", paths_here)
    check(isinstance(m.dropout_rate, float) and 0.0 <= m.dropout_rate < 1.0, "model.dropout_rate", m.dropout_rate,
          "use a value in [0, 1); T5 finetunes with 0.1.")
    if checked_here(config.data.vocab, paths_here):
        check_vocab_file(config.data.vocab)
    check(bool(eval_task_names(config)), "tasks.eval", t.eval, "name at least one Task, e.g. 'glue_sst2'.")
    if config.mode == "finetune":
        check(bool(t.train), "tasks.train", t.train, "name the Task or Mixture to finetune on, e.g. 'glue_sst2'.")
    for field in ("inputs_length", "targets_length"):
        check(isinstance(t[field], int) and t[field] >= 2, f"tasks.{field}", t[field], "use an integer >= 2.")
    check(isinstance(t.eval_examples, int) and t.eval_examples >= 0, "tasks.eval_examples", t.eval_examples,
          "use 0 (the whole split) or a positive number of examples.")
    for directory in classification_dirs(config) if paths_here else ():
        check(files.isfile(files.join(directory, "train.tsv")), "tasks.classification_dirs", directory,
              "each directory needs train.tsv and dev.tsv of `text<TAB>label` lines.")
    from tasks.pretraining import check_downstream_source
    for field in ("glue_source", "summarization_source"):
        check_downstream_source(t[field], f"tasks.{field}")
    _check_on_bad_input(config.data)
    _validate_hf_tasks(config)
    check(not t.best_metric or t.best_metric.count("/") == 1, "tasks.best_metric", t.best_metric,
          "use 'task/metric', e.g. 'glue_sst2/accuracy', or '' for the first eval task's main metric.")
    _validate_decode(dec)
    if checked_here(config.model.path, paths_here) or config.model.source != "hf":
        _resolve_decode(config)


def _validate_infer(config) -> None:
    """infer: the model, the input (a file that exists, or a Task name checked once registered), lengths
    and decoding."""
    from miniend_jax.inputs import is_file_input
    i, t = config.infer, config.tasks
    validate_model_section(config.model, "model")
    check_vocab_file(config.data.vocab)
    check(bool(i.input), "infer.input", i.input,
          "give a file of inputs (.jsonl or one per line) or a registered Task name, e.g. 'glue_sst2'.")
    if is_file_input(i.input):
        check(files.isfile(i.input), "infer.input", i.input,
              "no such file; give a .jsonl or text file of inputs, or a registered Task name.")
    check(isinstance(i.field, str) and bool(i.field), "infer.field", i.field, "name the jsonl field of the input text.")
    check(isinstance(i.examples, int) and i.examples >= 0, "infer.examples", i.examples,
          "use 0 (every input) or a positive number.")
    for field in ("inputs_length", "targets_length"):
        check(isinstance(t[field], int) and t[field] >= 2, f"tasks.{field}", t[field], "use an integer >= 2.")
    _check_on_bad_input(config.data)
    _validate_hf_tasks(config)
    _validate_decode(config.decode)
    _resolve_decode(config)


def _validate_hf_tasks(config) -> None:
    from tasks import hf_tasks
    for name, spec in hf_tasks.specs(config).items():
        hf_tasks.check_spec(name, spec)


def _validate_decode(dec) -> None:
    check(isinstance(dec.num_beams, int) and dec.num_beams >= 1, "decode.num_beams", dec.num_beams,
          "use 1 (greedy) or more beams.")
    check(isinstance(dec.batch_size, int) and dec.batch_size >= 1, "decode.batch_size", dec.batch_size,
          "use a positive integer.")
    check(isinstance(dec.max_length, int) and dec.max_length >= 0, "decode.max_length", dec.max_length,
          "use 0 (the targets length) or a positive number of tokens.")
    from miniend_jax.evaluation.decoding import CONFIG_LENGTH_PENALTY_RULES
    check(dec.length_penalty_rule in CONFIG_LENGTH_PENALTY_RULES, "decode.length_penalty_rule",
          dec.length_penalty_rule, "use 't5' (t5x's beam search, T5's brevity penalty), 'hf' (transformers "
          "generate's) or 'auto' (hf where a HF model's generation_config.json sets length_penalty, else t5).")
    check(isinstance(dec.length_penalty, (int, float)) and not isinstance(dec.length_penalty, bool),
          "decode.length_penalty", dec.length_penalty, "use a number (T5: 0.6; HF's default: 1.0).")
    for field, least in (("min_length", 0), ("no_repeat_ngram_size", 0), ("forced_bos_token_id", -1),
                         ("forced_eos_token_id", -1)):
        value = dec[field]
        check(isinstance(value, int) and not isinstance(value, bool) and value >= least, f"decode.{field}", value,
              f"use an integer >= {least}{' (-1: none)' if least < 0 else ' (0: off)'}.")
    check(isinstance(dec.early_stopping, bool), "decode.early_stopping", dec.early_stopping, "use True or False.")
    check(not (dec.early_stopping and dec.length_penalty_rule == "t5"), "decode.early_stopping", dec.early_stopping,
          "it is generate's option: use length_penalty_rule 'hf' (or 'auto'), or early_stopping=False.")


def _resolve_decode(config) -> None:
    """The decoding settings resolve (`length_penalty_rule="auto"` reads a HF model's generation config)."""
    from miniend_jax.build import decode_settings
    decode_settings(config)


def check_vocab_file(path: str, fix: str = "") -> None:
    """`data.vocab` is a tokenizer that loads (not only a file that exists): a SentencePiece model (T5), or a
    byte-level BPE tokenizer (BART's: a `tokenizer.json`, or a directory holding it or `vocab.json` and
    `merges.txt`).

    Raises:
      ConfigError: missing, or neither kind of tokenizer; `fix` is appended to the remedy.
    """
    import miniend_jax.checkpoints.bpe as bpe
    from miniend_jax.errors import CheckpointError
    tail = f", {fix}" if fix else "."
    if bpe.is_bpe(path):
        try:
            bpe.load_tokenizer(path)
        except CheckpointError as error:
            raise ConfigError(f"data.vocab={path!r}: {error}{tail}") from None
        return
    check(files.exists(path), "data.vocab", path, f"does not exist; point it at a SentencePiece model file or a "
          f"byte-level BPE tokenizer ({bpe.FORMS}){tail}")
    check(files.isfile(path), "data.vocab", path, f"is a directory holding neither tokenizer.json nor vocab.json "
          f"and merges.txt; point it at a SentencePiece model file or a byte-level BPE tokenizer{tail}")
    import sentencepiece
    try:
        sentencepiece.SentencePieceProcessor(model_file=files.local_copy(path))
    except (OSError, RuntimeError) as error:
        raise ConfigError(f"data.vocab={path!r} is not a SentencePiece model ({str(error)[:120]}); point it at "
                          f"a spiece.model file (e.g. ../shared/data/t5_spiece/spiece.model) or a byte-level BPE "
                          f"tokenizer{tail}") from None


def check_vocab(config, models) -> None:
    """Each `(role, model config or None)` reads the tokenizer `data.vocab`: room for every id (plus
    `data.extra_ids` sentinels for SentencePiece), and the tokenizer's EOS and pad ids (a T5 model with T5's
    SentencePiece, a BART model with a byte-level BPE tokenizer).

    Raises:
      ConfigError: a model's `vocab_size` is smaller than the tokenizer's, or its EOS or pad id is not the
        tokenizer's (a model of one family with the other family's tokenizer).
    """
    from miniend_jax.checkpoints.tokenizer import special_ids, vocab_size
    tokens = vocab_size(config.data.vocab, config.data.extra_ids)
    ids = special_ids(config.data.vocab)
    for role, model in models:
        if model is None:
            continue
        model_ids = {"eos": model.eos_token_id, "hf_pad": getattr(model, "hf_pad_token_id", 0)}
        if model_ids != ids:
            raise ConfigError(
                f"data.vocab={config.data.vocab!r} does not belong to the {role}, a {type(model).family} model: the "
                f"tokenizer's EOS and pad ids are {ids['eos']} and {ids['hf_pad']}, the model's {model_ids['eos']} "
                f"and {model_ids['hf_pad']}. Point data.vocab at the model's own tokenizer (T5: a SentencePiece "
                "spiece.model; BART: its byte-level BPE files), or give the model the tokenizer's ids (its "
                "eos_token_id, and for BART hf_pad_token_id; README, 'Model families').")
        if model.vocab_size < tokens:
            raise ConfigError(f"{role} vocab_size={model.vocab_size} is smaller than the tokenizer's {tokens} ids "
                              f"(data.vocab={config.data.vocab!r}); use a model with vocab_size >= {tokens}.")


def validate_layout(config, process_count: int, device_count: int) -> tuple[int, int, int]:
    """The mesh shape `(data, fsdp, tensor)` of `config.mesh` over `device_count` devices, checking that each
    microbatch divides over the batch axes, the batch over the processes, and that every process has batch
    shards of its own (data * fsdp a multiple of `process_count`).

    Raises:
      ConfigError: the mesh does not fit the devices, an axis rule is malformed, or the batch does not divide.
    """
    from miniend_jax import parallel
    mesh = config.mesh
    shape = parallel.mesh_shape(mesh.data, mesh.fsdp, mesh.tensor, device_count)
    parallel.rules_from_config(mesh.rules)
    tr = config.train
    batch_shards = shape[0] * shape[1]
    micro = tr.batch_size // tr.microbatches
    check(micro % batch_shards == 0, "train.batch_size", tr.batch_size,
          f"each microbatch ({micro} examples) must divide over data*fsdp={batch_shards} devices.")
    check(tr.batch_size % process_count == 0, "train.batch_size", tr.batch_size,
          f"must divide over {process_count} processes.")
    # Each process feeds its own rows of the global batch (`jax.make_array_from_process_local_data`), so
    # every process needs batch shards of its own: data*fsdp a multiple of the process count.
    if batch_shards % process_count:
        raise ConfigError(
            f"mesh=(data={shape[0]}, fsdp={shape[1]}, tensor={shape[2]}) splits the batch into data*fsdp="
            f"{batch_shards} shard(s) over {process_count} processes; each process feeds its own rows, so data*fsdp "
            f"must be a multiple of {process_count}: move devices from mesh.tensor to mesh.data or mesh.fsdp "
            f"(e.g. mesh.tensor={max(1, shape[2] * batch_shards // _lcm(batch_shards, process_count))} "
            f"mesh.fsdp={shape[1] * _lcm(batch_shards, process_count) // batch_shards}).")
    return shape


def _lcm(a: int, b: int) -> int:
    import math
    return a * b // math.gcd(a, b)


def check_models(config, shape, models, paths_here: bool = True) -> None:
    """Every check of a training run's model configs that needs no weights, for the run and for its plan
    (`paths_here=False`, see `checked_here`): the objective's needs (`DistillSpec.check_models`), the
    tokenizer's ids (when `data.vocab` is here), the parameters over the mesh `shape`, and the copy init
    (`student.init='teacher_layers'`).

    Args:
      models: the run's `train.loop.Models` (its `spec`, `student_config` and `teacher_config`).

    Raises:
      ConfigError: naming the failed check and the fix.
    """
    student, teacher = models.student_config, models.teacher_config
    role = "model" if config.mode == "finetune" else "student"
    models.spec.check_models(teacher, student)
    if config.mode == "distill" and config.student.init == "teacher_layers":
        from miniend_jax.distill.student_init import check_copyable
        check_copyable(teacher, student)
    if checked_here(config.data.vocab, paths_here) and files.exists(config.data.vocab):
        check_vocab(config, [(role, student), ("teacher", teacher)])
    check_position_limits(config, [(role, student), ("teacher", teacher)])
    check_models_divide(config, shape, [(role, student), ("teacher", teacher)])


@dataclasses.dataclass(frozen=True)
class Preflight:
    """What every mode that builds a model knows once its checks passed, before any weight is read.

    Attributes:
      shape: the mesh shape `(data, fsdp, tensor)` over this job's devices.
      spec: the run's `DistillSpec` (finetuning trains on cross-entropy).
      model: the config of the model the mode trains or decodes (the student, or `config.model`).
      teacher: the teacher's config where the objective needs one, else None.
    """

    shape: tuple[int, int, int]
    spec: object
    model: object
    teacher: object = None


TRAINING_MODES = ("distill", "pretrain", "finetune")
DECODING_MODES = ("evaluate", "infer")


def preflight(config, workdir: str) -> Preflight:
    """The one pre-flight of the modes that build a model (`TRAINING_MODES`, `DECODING_MODES`), in order:
    the mesh over this job's devices, the model configs (no weights), the checks that need them (the
    objective's needs, the tokenizer's ids, the parameters over the mesh, the copy init), the Tasks
    (finetune, evaluate), and for training modes the workdir's config. A new mode calls it first.

    Raises:
      ConfigError, CheckpointError: naming the problem and the fix, before anything is written.
    """
    import jax
    from miniend_jax import build, inputs
    from miniend_jax.train.loop import Models
    if config.mode in DECODING_MODES:
        shape, model = check_decoding_model(config)
        if config.mode == "evaluate":
            inputs.check_tasks(config, inputs.register_tasks(config))
        return Preflight(shape, build.distill_spec(config), model)
    if config.mode not in TRAINING_MODES:
        raise ConfigError(f"mode={config.mode!r} builds no model: it has no pre-flight.")
    shape = validate_layout(config, jax.process_count(), jax.device_count())
    spec = build.distill_spec(config)
    if config.mode == "finetune":
        model = build.model_config(config.model, "model", dropout_rate=config.model.dropout_rate)
        teacher = None
    else:
        model = build.student_config(config)
        teacher = build.teacher_config(config) if spec.needs_teacher else None
    check_models(config, shape, Models(spec=spec, student_config=model, teacher_config=teacher))
    if config.mode == "finetune":
        inputs.check_tasks(config, inputs.register_tasks(config))
    check_workdir(config, workdir)
    return Preflight(shape, spec, model, teacher)


def check_decoding_model(config) -> tuple[tuple[int, int, int], object]:
    """The pre-flight of a mode that loads one model to decode with it (`evaluate`, `infer`), before any
    weight is read: the mesh over this job's devices, `config.model`'s config, its room for the tokenizer's
    ids and its parameters over the mesh.

    Returns:
      (mesh shape, the model's config), for `build.model_on_mesh`.

    Raises:
      ConfigError, CheckpointError: naming the problem and the fix.
    """
    import jax
    from miniend_jax import build, parallel
    shape = parallel.mesh_shape(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, jax.device_count())
    parallel.rules_from_config(config.mesh.get("rules", {}))
    model_config = build.model_config(config.model, "model")
    check_vocab(config, [("model", model_config)])
    check_position_limits(config, [("model", model_config)])
    check_models_divide(config, shape, [("model", model_config)])
    return shape, model_config


def check_position_limits(config, models) -> None:
    """Each `(role, model config or None)` with learned absolute positions (BART's `max_position_embeddings`)
    has a position for every token the run feeds it: the pretraining lengths, or the Tasks' lengths and
    `decode.max_length`. (T5's relative positions have no limit.)

    Raises:
      ConfigError: naming the length, the limit and the fix.
    """
    if config.mode in ("distill", "pretrain"):
        from miniend_jax.inputs import pretraining_lengths
        lengths = {f"data.{k}_length": v for k, v in pretraining_lengths(config.data).items()}
    else:
        t = config.tasks
        lengths = {"tasks.inputs_length": t.inputs_length, "tasks.targets_length": t.targets_length,
                   "decode.max_length": config.decode.max_length}
    for role, model in models:
        limit = getattr(model, "max_position_embeddings", None)
        for field, length in lengths.items():
            check(limit is None or length <= limit, field, length,
                  f"the {role} has positions for {limit} tokens (max_position_embeddings); use at most {limit}.")


def check_models_divide(config, shape, models) -> None:
    """Every sharded parameter dimension of each `(role, model config or None)` divides over the mesh `shape`
    under the run's axis rules (`parallel.check_divisible`).

    Raises:
      ConfigError: before any compile, naming the parameter, the dimension and the mesh axis.
    """
    from miniend_jax import parallel
    from miniend_jax.models.registry import abstract_params
    rules = parallel.rules_from_config(config.mesh.get("rules", {}))
    for role, model_config in models:
        if model_config is not None:
            parallel.check_divisible(abstract_params(model_config), shape, rules, role)


def check_workdir(config, workdir: str) -> None:
    """Refuses a workdir that holds another run's config (unless `overwrite_config`); writes nothing.

    A field the workdir's config.json lacks (a setting added after that run started) is not a change: the
    run continues with the field's value, and the fields are printed.

    Raises:
      ConfigError: naming the first differing field and the fix; a config.json that cannot be read.
    """
    path = files.join(workdir, "config.json")
    resolved = json.loads(config.to_json_best_effort())
    if files.exists(path) and not config.get("overwrite_config", False):
        from miniend_jax.jsonl import read_json_object
        try:
            previous = read_json_object(path)
        except ValueError as error:
            raise ConfigError(f"{path} is damaged ({error}); restore it from the run's command (the config file and "
                              "its overrides), or set --config.overwrite_config=True to write this run's.") from None
        from flax import traverse_util
        old = traverse_util.flatten_dict(previous, sep=".")
        new = traverse_util.flatten_dict(resolved, sep=".")
        added = sorted(k for k in set(new) - set(old) if not k.startswith("mesh.rules."))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
                         and not k.startswith("mesh.rules.") and k not in added)
        if added and not changed:
            import jax
            if jax.process_index() == 0:
                print(f"{path} predates the settings {', '.join(added)}: continuing with "
                      f"{', '.join(f'{k}={new[k]!r}' for k in added)}", flush=True)
        if changed:
            key = changed[0]
            raise ConfigError(f"workdir {workdir} holds a different run (config.json has {key}={old.get(key)!r}, "
                              f"this run {new.get(key)!r}); use a new --workdir, or set "
                              "--config.overwrite_config=True to continue it with the new config.")


def write_resolved_config(config, workdir: str) -> None:
    """Writes `<workdir>/config.json` (process 0), after `check_workdir`; call it only once everything that
    can be checked (config, data, weights) has been, so that a failed start leaves the workdir as it was.

    Raises:
      ConfigError: from `check_workdir`.
    """
    check_workdir(config, workdir)
    resolved = json.loads(config.to_json_best_effort())
    files.makedirs(workdir)
    import jax
    if jax.process_index() == 0:  # whole or not at all (files.write_text)
        files.write_json(files.join(workdir, "config.json"), resolved, indent=2, sort_keys=True)
