"""Entry point: `python -m miniend_jax.main --config=configs/X.py [--config.a.b=v] --workdir=DIR`.

Modes: `distill` (teacher -> student), `pretrain` (a model from scratch on span corruption: the
from-scratch baseline, or a teacher), `export` (the newest checkpoint of a workdir -> HF directory).

Everything that can be wrong with the input is checked before loading weights or compiling:
config values, paths, model shapes against each other, the vocabulary, and that the corpus yields data.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from miniend_jax.errors import ConfigError, MiniEndError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")

MODES = ("distill", "pretrain", "export")
# Fields that may change when a run in an existing workdir is continued.
RESUMABLE_CHANGES = ("mode", "train.steps", "train.log_every", "train.eval_every", "train.eval_batches",
                     "export.path", "export.at_end", "overwrite_config")


# ---------------------------------------------------------------------------------------------
# Models from the config
# ---------------------------------------------------------------------------------------------
def distill_spec(config):
    from miniend_jax.distill.objectives import DistillSpec
    d = config.distill
    objective = "pretrain" if config.mode == "pretrain" else d.objective
    return DistillSpec(objective=objective, relation_heads=d.relation_heads,
                       teacher_encoder_layer=d.teacher_layers.encoder,
                       teacher_decoder_layer=d.teacher_layers.decoder,
                       student_encoder_layer=d.student_layers.encoder,
                       student_decoder_layer=d.student_layers.decoder, temperature=d.temperature,
                       weights=tuple(sorted(d.weights.to_dict().items())),
                       interpolation_space=d.interpolation.space)


def student_config(config):
    from miniend_jax.models.presets import get_preset
    s = config.student
    return get_preset(s.preset, **{**s.overrides.to_dict(), "dtype": s.dtype, "param_dtype": s.param_dtype})


def teacher_config(config):
    """The teacher's `T5Config` from its source, without reading weights."""
    from miniend_jax.checkpoints import hf
    from miniend_jax.models.config import T5Config
    from miniend_jax.models.presets import get_preset
    t = config.teacher
    dtypes = {"dtype": t.dtype, "param_dtype": t.param_dtype, "dropout_rate": 0.0}
    if t.source == "preset":
        return get_preset(t.preset, **{**t.overrides.to_dict(), **dtypes})
    if t.source == "hf":
        return hf.config_from_hf(hf.read_config(t.path), **dtypes)
    if t.source == "miniend":
        from miniend_jax.checkpoints.state import read_meta
        try:
            meta = read_meta(t.path)
        except FileNotFoundError:
            raise ConfigError(f"teacher.path={t.path!r} holds no miniend_jax checkpoint; point it at the "
                              "workdir of a finished pretrain or distill run.") from None
        return T5Config(**{**meta["model"], **dtypes})
    raise ConfigError(f"teacher.source={t.source!r}: use 'hf', 'miniend' or 'preset'.")


def load_teacher(config, expected):
    """(config, host params) of the teacher; `expected` is `teacher_config(config)`."""
    import flax.linen as nn
    import jax
    import numpy as np
    from miniend_jax.models.t5 import init_params
    t = config.teacher
    if t.source == "preset":
        params = nn.unbox(init_params(expected, jax.random.PRNGKey(config.seed + 1)))
        return expected, jax.tree.map(np.asarray, params)
    if t.source == "hf":
        from miniend_jax.checkpoints.hf import load_hf_checkpoint
        return load_hf_checkpoint(t.path, dtype=t.dtype, param_dtype=t.param_dtype, dropout_rate=0.0)
    from miniend_jax.checkpoints.state import restore_params
    abstract = _host_abstract(expected)
    params, _ = restore_params(t.path, abstract, jax.tree.map(lambda _: _host_sharding(), abstract))
    return expected, jax.tree.map(lambda x: np.asarray(x).astype(expected.params_dtype), params)


def _host_sharding():
    import jax
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _host_abstract(model_config):
    import flax.linen as nn
    import jax
    from miniend_jax.models.t5 import init_params
    return nn.unbox(jax.eval_shape(lambda: init_params(model_config, jax.random.PRNGKey(0))))


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def build_data(config, process_index: int, process_count: int):
    """Registers the Task, checks it yields examples, and returns the loop's `Data`."""
    from miniend_jax.train.loop import Data
    from tasks import pretraining as tp
    d = config.data
    kwargs = dict(noise_density=d.noise_density, mean_noise_span_length=d.mean_noise_span_length,
                  extra_ids=d.extra_ids)
    if d.source == "files":
        scan = tp.scan_files(tp.resolve_files(d.files), max_line_chars=d.max_line_chars, on_bad_input=d.on_bad_input)
        if process_index == 0:
            print(f"input: {scan.summary()}", flush=True)
        name = tp.register_local_span_corruption(scan.files, d.vocab, file_format=d.format, text_field=d.text_field,
                                                 validation_files=d.validation_files,
                                                 max_line_chars=d.max_line_chars, **kwargs)
    else:
        name = tp.register_c4_span_corruption(d.vocab, tfds_name=d.tfds_name, data_dir=d.tfds_data_dir or None,
                                              **kwargs)
    lengths = tp.task_feature_lengths(d.inputs_length, d.targets_length, d.noise_density, d.mean_noise_span_length)
    per_host = config.train.batch_size // process_count
    common = dict(pack=d.pack, shard_index=process_index, num_shards=process_count)
    probe = tp.get_dataset(name, lengths, split="train", batch_size=1, shuffle=False, seed=0, num_epochs=1, **common)
    if not any(True for _ in probe.take(1)):
        raise ConfigError(f"data.files={d.files!r} yields no training examples (empty or unreadable files, or "
                          f"data.format={d.format!r} does not match them); fix the corpus or the format.")
    train = iter(tp.get_dataset(name, lengths, split="train", batch_size=per_host, shuffle=True, seed=config.seed,
                                num_epochs=None, shuffle_buffer_size=d.shuffle_buffer, **common))
    make_eval = lambda: iter(tp.get_dataset(name, lengths, split="validation", batch_size=per_host, shuffle=False,
                                            seed=0, num_epochs=1, **common))
    return Data(train=train, make_eval=make_eval, inputs_length=lengths["inputs"],
                targets_length=lengths["targets"])


# ---------------------------------------------------------------------------------------------
# Validation, before anything heavy
# ---------------------------------------------------------------------------------------------
def _check(condition: bool, field: str, value, fix: str):
    if not condition:
        raise ConfigError(f"{field}={value!r}: {fix}")


def validate_config(config) -> None:
    """Field types, ranges and paths; raises `ConfigError` naming the field, the value and the fix."""
    from miniend_jax.distill.objectives import INTERPOLATION_SCHEDULES, OBJECTIVES
    from miniend_jax.distill.student_init import INIT_MODES
    from miniend_jax.models.presets import get_preset
    _check(config.mode in MODES, "mode", config.mode, f"use one of {', '.join(MODES)}.")
    if config.mode == "export":
        return
    t, s, d, tr = config.teacher, config.student, config.data, config.train
    if config.mode == "distill":
        _check(config.distill.objective in OBJECTIVES and config.distill.objective != "pretrain",
               "distill.objective", config.distill.objective,
               f"use one of {', '.join(o for o in OBJECTIVES if o != 'pretrain')} (or mode=pretrain).")
        _check(t.source in ("hf", "miniend", "preset"), "teacher.source", t.source, "use 'hf', 'miniend' or 'preset'.")
        if t.source in ("hf", "miniend"):
            _check(bool(t.path) and os.path.isdir(t.path), "teacher.path", t.path,
                   "point it at an existing directory (a HF checkpoint or a miniend_jax workdir).")
        else:
            get_preset(t.preset)
    get_preset(s.preset)
    _check(s.init in INIT_MODES, "student.init", s.init, f"use one of {', '.join(INIT_MODES)}.")
    _check(d.source in ("files", "c4"), "data.source", d.source, "use 'files' or 'c4'.")
    _check(d.format in ("auto", "text", "jsonl", "wikiextractor"), "data.format", d.format,
           "use 'auto', 'text', 'jsonl' or 'wikiextractor'.")
    _check(d.on_bad_input in ("skip", "error"), "data.on_bad_input", d.on_bad_input, "use 'skip' or 'error'.")
    _check(os.path.isfile(d.vocab), "data.vocab", d.vocab, "point it at a SentencePiece model file.")
    for field in ("inputs_length",):
        _check(isinstance(d[field], int) and d[field] >= 8, f"data.{field}", d[field], "use an integer >= 8.")
    _check(0 < d.noise_density < 1, "data.noise_density", d.noise_density, "use a value in (0, 1), T5: 0.15.")
    for field in ("steps", "batch_size", "microbatches", "log_every", "checkpoint_every", "keep_checkpoints",
                  "max_consecutive_nonfinite"):
        _check(isinstance(tr[field], int) and tr[field] > 0, f"train.{field}", tr[field], "use a positive integer.")
    _check(tr.batch_size % tr.microbatches == 0, "train.microbatches", tr.microbatches,
           f"must divide train.batch_size={tr.batch_size}.")
    _check(config.distill.temperature > 0, "distill.temperature", config.distill.temperature,
           "use a positive temperature (default 1).")
    _check(config.optim.learning_rate > 0, "optim.learning_rate", config.optim.learning_rate, "use a positive value.")
    _check(config.optim.decay in ("linear", "cosine", "constant"), "optim.decay", config.optim.decay,
           "use 'linear', 'cosine' or 'constant'.")
    interp = config.distill.interpolation
    _check(interp.schedule in INTERPOLATION_SCHEDULES, "distill.interpolation.schedule", interp.schedule,
           f"use one of {', '.join(INTERPOLATION_SCHEDULES)}.")
    _check(0.0 <= interp.start <= 1.0, "distill.interpolation.start", interp.start, "use a value in [0, 1].")
    if interp.schedule != "constant":
        _check(interp.steps > 0, "distill.interpolation.steps", interp.steps,
               "use a positive number of steps for a_t to reach 1.")


def validate_layout(config, process_count: int, device_count: int) -> tuple[int, int, int]:
    from miniend_jax import parallel
    mesh = config.mesh
    shape = parallel.mesh_shape(mesh.data, mesh.fsdp, mesh.tensor, device_count)
    tr = config.train
    batch_shards = shape[0] * shape[1]
    micro = tr.batch_size // tr.microbatches
    _check(micro % batch_shards == 0, "train.batch_size", tr.batch_size,
           f"each microbatch ({micro} examples) must divide over data*fsdp={batch_shards} devices.")
    _check(tr.batch_size % process_count == 0, "train.batch_size", tr.batch_size,
           f"must divide over {process_count} processes.")
    return shape


def write_resolved_config(config, workdir: str) -> None:
    """Writes `config.json`; refuses a workdir that holds another run's config (unless overwrite_config)."""
    path = os.path.join(workdir, "config.json")
    resolved = json.loads(config.to_json_best_effort())
    if os.path.exists(path) and not config.get("overwrite_config", False):
        with open(path) as f:
            previous = json.load(f)
        from flax import traverse_util
        old = traverse_util.flatten_dict(previous, sep=".")
        new = traverse_util.flatten_dict(resolved, sep=".")
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
        if changed:
            key = changed[0]
            raise ConfigError(f"workdir {workdir} holds a different run (config.json has {key}={old.get(key)!r}, "
                              f"this run {new.get(key)!r}); use a new --workdir, or set "
                              "--config.overwrite_config=True to continue it with the new config.")
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(resolved, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------
def export(config, workdir: str) -> str:
    """Newest student checkpoint of `workdir` -> HF directory (config.export.path or workdir/hf_student)."""
    import jax
    from miniend_jax.checkpoints.hf import save_hf_checkpoint
    from miniend_jax.checkpoints.state import read_meta, restore_params
    from miniend_jax.models.config import T5Config
    try:
        meta = read_meta(workdir)
    except FileNotFoundError:
        raise ConfigError(f"--workdir={workdir!r} holds no checkpoint to export; train first or fix the path.") from None
    model_config = T5Config(**meta["model"])
    abstract = _host_abstract(model_config)
    params, _ = restore_params(workdir, abstract, jax.tree.map(lambda _: _host_sharding(), abstract))
    path = config.export.path or os.path.join(workdir, "hf_student")
    vocab = config.data.vocab if os.path.isfile(config.data.vocab) else None
    save_hf_checkpoint(path, model_config, jax.device_get(params), spiece_model=vocab)
    print(f"exported step {meta['step']} to {path}", flush=True)
    return path


def run(config, workdir: str):
    """Runs `config` in `workdir`; returns the final train state (or the export path)."""
    import jax
    if not workdir:
        raise ConfigError("--workdir is required: the directory for checkpoints, metrics and the config.")
    validate_config(config)
    if config.mode == "export":
        return export(config, workdir)

    from miniend_jax import parallel
    from miniend_jax.checkpoints.tokenizer import vocab_size
    from miniend_jax.distill.student_init import check_copyable, copy_teacher_layers
    from miniend_jax.train.loop import Models, Trainer

    shape = validate_layout(config, jax.process_count(), jax.device_count())
    spec = distill_spec(config)
    student = student_config(config)
    teacher = teacher_config(config) if spec.needs_teacher else None
    spec.check_models(teacher, student)
    tokens = vocab_size(config.data.vocab, config.data.extra_ids)
    for role, model in (("student", student), ("teacher", teacher)):
        if model is not None and model.vocab_size < tokens:
            raise ConfigError(f"{role} vocab_size={model.vocab_size} is smaller than the tokenizer's {tokens} ids "
                              f"(data.vocab={config.data.vocab!r}); use a model with vocab_size >= {tokens}.")
    if config.student.init == "teacher_layers":
        if teacher is None:
            raise ConfigError("student.init='teacher_layers' needs a teacher; use mode=distill or student.init='random'.")
        check_copyable(teacher, student)
    data = build_data(config, jax.process_index(), jax.process_count())
    write_resolved_config(config, workdir)

    teacher_params = None
    if teacher is not None:
        teacher, teacher_params = load_teacher(config, teacher)
    init = None
    if config.student.init == "teacher_layers":
        init = lambda abstract: copy_teacher_layers(teacher_params, teacher, student, abstract)
    models = Models(spec=spec, student_config=student, teacher_config=teacher, teacher_params=teacher_params,
                    student_init=init)
    mesh = parallel.make_mesh(*shape)
    state = Trainer(config, workdir, models, data, mesh).run()
    if config.export.at_end and int(state.step) == config.train.steps:  # not after a preemption stop
        export(config, workdir)
    return state


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        run(FLAGS.config, FLAGS.workdir)
    except MiniEndError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
