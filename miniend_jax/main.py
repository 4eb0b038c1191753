"""Entry point: `python -m miniend_jax.main --config=configs/X.py [--config.a.b=v] --workdir=DIR`.

Modes: `distill` (teacher -> student), `pretrain` (a model from scratch on span corruption: the
from-scratch baseline, or a teacher), `finetune` (any checkpoint on a seqio Task or Mixture, scoring the
validation set every `train.eval_every` steps and keeping the best checkpoint), `evaluate` (a checkpoint
on Tasks: `results.json` and a markdown table), `export` (the newest checkpoint of a workdir -> HF).

Everything that can be wrong with the input is checked before loading weights or compiling:
config values, paths, model shapes against each other, the vocabulary, and that the corpus yields data.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from absl import app, flags, logging
from ml_collections import config_flags

from miniend_jax.errors import CheckpointError, ConfigError, MiniEndError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")

MODES = ("distill", "pretrain", "finetune", "evaluate", "export", "plan")
# Fields that may change when a run in an existing workdir is continued.
RESUMABLE_CHANGES = ("mode", "train.steps", "train.log_every", "train.eval_every", "train.eval_batches",
                     "export.path", "export.at_end", "overwrite_config", "distributed.enabled",
                     "distributed.coordinator_address", "distributed.num_processes", "distributed.process_id",
                     "distributed.cpu_collectives", "distributed.timeout_seconds",
                     # The layout over devices: orbax restores the state into the new shardings.
                     "mesh.data", "mesh.fsdp", "mesh.tensor")


# ---------------------------------------------------------------------------------------------
# Models from the config
# ---------------------------------------------------------------------------------------------
def distill_spec(config):
    from miniend_jax.distill.objectives import DistillSpec
    d = config.distill
    objective = d.objective if config.mode == "distill" else "pretrain"  # finetuning: cross-entropy
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
    return get_preset(s.preset, **{**s.overrides.to_dict(), "dtype": s.dtype, "param_dtype": s.param_dtype,
                                   "scan_layers": s.scan_layers})


def source_config(section, role: str, dropout_rate: float = 0.0):
    """The `T5Config` of a model section (`teacher` or `model`: source, path, preset, overrides, dtypes),
    without reading weights."""
    from miniend_jax.checkpoints import hf
    from miniend_jax.models.presets import get_preset
    dtypes = {"dtype": section.dtype, "param_dtype": section.param_dtype, "dropout_rate": dropout_rate,
              "scan_layers": section.scan_layers}
    if section.source == "preset":
        return get_preset(section.preset, **{**section.overrides.to_dict(), **dtypes})
    if section.source == "hf":
        return hf.config_from_hf(hf.read_config(section.path), **dtypes)
    if section.source == "miniend":
        from miniend_jax.checkpoints.state import read_meta
        try:
            meta = read_meta(section.path)
        except FileNotFoundError:
            raise ConfigError(f"{role}.path={section.path!r} holds no miniend_jax checkpoint; point it at the "
                              "workdir of a finished pretrain, distill or finetune run.") from None
        return saved_model_config(meta, section.path, **dtypes)
    raise ConfigError(f"{role}.source={section.source!r}: use 'hf', 'miniend' or 'preset'.")


def load_source(section, expected, seed: int):
    """(config, host params) of a model section; `expected` is its `source_config`."""
    import flax.linen as nn
    import jax
    import numpy as np
    from miniend_jax.models.t5 import init_params
    if section.source == "preset":
        params = nn.unbox(init_params(expected, jax.random.PRNGKey(seed)))
        return expected, jax.tree.map(np.asarray, params)
    if section.source == "hf":
        from miniend_jax.checkpoints.hf import load_hf_checkpoint
        return load_hf_checkpoint(section.path, dtype=section.dtype, param_dtype=section.param_dtype,
                                  dropout_rate=expected.dropout_rate, scan_layers=section.scan_layers)
    from miniend_jax.checkpoints.state import read_meta, restore_params
    from miniend_jax.models.t5 import to_layout
    # Restored in the layout it was saved in, then converted to the one this run asks for.
    saved = expected.replace(scan_layers=read_meta(section.path)["model"].get("scan_layers", False))
    abstract = _host_abstract(saved)
    params, _ = restore_params(section.path, abstract, jax.tree.map(lambda _: _host_sharding(), abstract))
    params = jax.tree.map(lambda x: np.asarray(x).astype(expected.params_dtype), params)
    return expected, to_layout(params, expected)


def saved_model_config(meta: dict, path: str, **changes):
    """The `T5Config` a checkpoint's meta records (with `changes`).

    Raises:
      CheckpointError: the meta's model config is not one this version of miniend_jax reads.
    """
    from miniend_jax.models.config import T5Config
    try:
        return T5Config(**{**meta["model"], **changes})
    except (TypeError, KeyError) as error:
        raise CheckpointError(f"{path}: the checkpoint's model config cannot be read ({error}); it was written by "
                              "another version of miniend_jax or is damaged.") from None


def teacher_config(config):
    """The teacher's `T5Config` from its source, without reading weights."""
    return source_config(config.teacher, "teacher")


def load_teacher(config, expected):
    """(config, host params) of the teacher; `expected` is `teacher_config(config)`."""
    return load_source(config.teacher, expected, config.seed + 1)


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
        scan = tp.scan_files(tp.resolve_files(d.files), max_line_chars=d.max_line_chars, on_bad_input=d.on_bad_input,
                             file_format=d.format, text_field=d.text_field)
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


def register_tasks(config) -> list[str]:
    """Registers the GLUE, summarization and local classification Tasks (and the `glue` Mixture); returns
    the Task names."""
    from tasks import classification, glue, summarization
    t, d = config.tasks, config.data
    tfds_dir = t.tfds_data_dir or None
    names = glue.register(d.vocab, source=t.glue_source, data_dir=t.glue_dir, tfds_data_dir=tfds_dir,
                          extra_ids=d.extra_ids)
    names += summarization.register(d.vocab, source=t.summarization_source, data_dir=t.summarization_dir,
                                    tfds_data_dir=tfds_dir, extra_ids=d.extra_ids)
    names += [classification.register(directory, d.vocab, extra_ids=d.extra_ids)
              for directory in _classification_dirs(config)]
    return names


def _classification_dirs(config) -> list[str]:
    return [p.strip() for p in config.tasks.classification_dirs.split(",") if p.strip()]


def eval_task_names(config) -> list[str]:
    return [n.strip() for n in config.tasks.eval.split(",") if n.strip()]


def check_tasks(config, names: list[str]) -> None:
    """Every named Task (or Mixture) is registered and its files for the splits used are on disk."""
    import seqio
    from tasks import classification, glue, summarization
    t = config.tasks
    wanted = [("tasks.eval", n, t.eval_split) for n in eval_task_names(config)]
    if config.mode == "finetune":
        wanted.insert(0, ("tasks.train", t.train, "train"))
    for field, name, split in wanted:
        if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
            glue.check_split(name, split, source=t.glue_source, data_dir=t.glue_dir)  # names a missing file
            raise ConfigError(f"{field}={name!r} is not a registered Task or Mixture; use one of "
                              f"{', '.join(sorted(names + list(seqio.MixtureRegistry.names())))}.")
        glue.check_split(name, split, source=t.glue_source, data_dir=t.glue_dir)
        for task_name in _task_names(name):
            glue.check_targets_length(task_name, config.data.vocab, t.targets_length, config.data.extra_ids)
            for directory in _classification_dirs(config):
                if classification.task_name(directory) == task_name:
                    classification.check_labels_fit(classification.labels_of(directory), config.data.vocab,
                                                    t.targets_length, config.data.extra_ids, task_name)
        summarization.check_split(name, split, source=t.summarization_source, data_dir=t.summarization_dir)
        task = seqio.get_mixture_or_task(name)
        if split not in task.splits:
            raise ConfigError(f"{field}={name!r} has no split {split!r} (it has {', '.join(task.splits)}); "
                              "choose another task or split.")
    if config.mode == "finetune":
        _check_best_metric(config)


def _check_best_metric(config) -> None:
    """`tasks.best_metric` names an evaluated Task and one of its scores (checked before training)."""
    from miniend_jax.evaluation.metrics import ROUGE_TYPES
    from tasks import glue
    task, metric = _best_metric(config)
    scored = scored_task_names(config)
    _check(task in scored, "tasks.best_metric", config.tasks.best_metric,
           f"name one of the evaluated Tasks ({', '.join(scored)}; a Mixture is scored as its Tasks) before the '/'.")
    glue_task = glue.task_of(task)
    known = (glue_task.metric_names if glue_task else list(ROUGE_TYPES) if task.startswith("summ_")
             else ["accuracy", "f1_macro"] if task.startswith("cls_") else None)
    _check(known is None or metric in known, "tasks.best_metric", f"{task}/{metric}",
           f"{task} reports {', '.join(known or [])}; choose one of them.")


def scored_task_names(config) -> list[str]:
    """The Tasks `tasks.eval` scores: each named Task, and each Task of a named Mixture."""
    return [task for name in eval_task_names(config) for task in _task_names(name)]


def _task_names(name: str) -> list[str]:
    """The Tasks of a Task or Mixture name."""
    import seqio
    if name in seqio.MixtureRegistry.names():
        return [task.name for task in seqio.get_mixture_or_task(name).tasks]
    return [name]


def build_task_data(config, process_index: int, process_count: int):
    """The loop's `Data` for finetuning: `tasks.train` (shuffled, repeated) and its validation loss."""
    import seqio
    from miniend_jax.train.loop import Data
    from tasks import pretraining as tp
    t = config.tasks
    lengths = {"inputs": t.inputs_length, "targets": t.targets_length}
    per_host = config.train.batch_size // process_count
    common = dict(pack=config.data.pack, shard_index=process_index, num_shards=process_count)
    train = iter(tp.get_dataset(t.train, lengths, split="train", batch_size=per_host, shuffle=True,
                                seed=config.seed, num_epochs=None, shuffle_buffer_size=config.data.shuffle_buffer,
                                **common))
    make_eval = None
    if t.eval_split in seqio.get_mixture_or_task(t.train).splits:
        make_eval = lambda: iter(tp.get_dataset(t.train, lengths, split=t.eval_split, batch_size=per_host,
                                                shuffle=False, seed=0, num_epochs=1, **common))
    return Data(train=train, make_eval=make_eval, inputs_length=t.inputs_length, targets_length=t.targets_length)


def _decode_settings(config):
    from miniend_jax.evaluation.evaluator import DecodeSettings
    return DecodeSettings(**config.decode.to_dict())


def _best_metric(config) -> tuple[str, str]:
    """(task, metric) that picks the best finetuning checkpoint."""
    from tasks import glue
    if config.tasks.best_metric:
        task, _, metric = config.tasks.best_metric.partition("/")
        return task, metric
    task = scored_task_names(config)[0]
    glue_task = glue.task_of(task)
    if glue_task:
        return task, glue_task.main_metric
    return task, ("accuracy" if task.startswith("cls_") else "rougeL")


class BestCheckpoint:
    """`Trainer.on_evaluate` for finetuning: scores the validation split of `tasks.eval` by decoding and
    keeps the best parameters as a HF directory `<workdir>/best` with `best.json` (and the results of that
    evaluation as `results.json` / `results.md`). Survives restarts: the best so far is read back."""

    def __init__(self, config, workdir: str, model_config):
        self.config, self.workdir, self.model_config = config, workdir, model_config
        self.task, self.metric = _best_metric(config)
        self.evaluator = None
        self.best = None
        path = os.path.join(workdir, "best.json")
        if os.path.exists(path):
            try:
                with open(path) as f:
                    saved = json.load(f)
                value = saved["value"]
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
                raise CheckpointError(f"{path} is damaged ({type(error).__name__}: {error}); delete it to choose "
                                      "the best checkpoint afresh from the next evaluation.") from None
            if (saved.get("task"), saved.get("metric")) not in ((None, None), (self.task, self.metric)):
                raise ConfigError(f"{path} holds the best {saved.get('task')}/{saved.get('metric')}, this run "
                                  f"chooses by {self.task}/{self.metric}; set tasks.best_metric to match, or use a "
                                  "new --workdir.")
            self.best = value if value is not None and np.isfinite(value) else None  # a NaN is never best

    def __call__(self, trainer, params, step: int) -> dict:
        import jax
        from miniend_jax.checkpoints.hf import save_hf_checkpoint
        from miniend_jax.evaluation.evaluator import TaskEvaluator, write_results
        t = self.config.tasks
        if self.evaluator is None:
            self.evaluator = TaskEvaluator(eval_task_names(self.config), t.eval_split, trainer.student, trainer.mesh,
                                           trainer.rules, inputs_length=t.inputs_length,
                                           targets_length=t.targets_length, decode=_decode_settings(self.config),
                                           num_examples=t.eval_examples)
        results = self.evaluator.evaluate(params, step)
        if self.task not in results or self.metric not in results[self.task]:
            raise ConfigError(f"tasks.best_metric: {self.task}/{self.metric} is not among the scores "
                              f"{sorted(f'{k}/{m}' for k, v in results.items() for m in v)}; set it to one of them.")
        value = results[self.task][self.metric]
        if not np.isfinite(value):  # e.g. the Pearson correlation of a constant prediction
            print(f"{self.task}/{self.metric} is undefined at step {step} (NaN); the best checkpoint stays "
                  f"{'unset' if self.best is None else f'at {self.best:.2f}'}", flush=True)
        elif self.best is None or value > self.best:
            self.best = value
            host = jax.tree.map(np.asarray, _gather(params))
            if jax.process_index() == 0:
                vocab = self.config.data.vocab if os.path.isfile(self.config.data.vocab) else None
                save_hf_checkpoint(os.path.join(self.workdir, "best"), self.model_config, host, spiece_model=vocab,
                                   extra_ids=self.config.data.extra_ids)
                write_results(self.workdir, results, step=step, model=_model_name(self.config))
                path = os.path.join(self.workdir, "best.json")
                with open(path + ".tmp", "w") as f:  # written whole or not at all: a kill never leaves half
                    json.dump({"step": step, "task": self.task, "metric": self.metric, "value": value}, f)
                os.replace(path + ".tmp", path)
                print(f"best {self.task}/{self.metric} {value:.2f} at step {step}: saved to "
                      f"{os.path.join(self.workdir, 'best')}", flush=True)
        return {f"{task}/{name}": v for task, scores in results.items() for name, v in scores.items()}


def _model_name(config) -> str:
    m = config.model
    return m.path if m.source in ("hf", "miniend") else f"random {m.preset}"


def _gather(params):
    import jax
    if jax.process_count() == 1:
        return jax.device_get(params)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(params, tiled=True)


# ---------------------------------------------------------------------------------------------
# Validation, before anything heavy
# ---------------------------------------------------------------------------------------------
def _check(condition: bool, field: str, value, fix: str):
    if not condition:
        raise ConfigError(f"{field}={value!r}: {fix}")


def _check_vocab_file(path: str) -> None:
    """`data.vocab` is a SentencePiece model that loads (not only a file that exists)."""
    _check(os.path.isfile(path), "data.vocab", path, "point it at a SentencePiece model file.")
    import sentencepiece
    try:
        sentencepiece.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as error:
        raise ConfigError(f"data.vocab={path!r} is not a SentencePiece model ({str(error)[:120]}); point it at "
                          "a spiece.model file (e.g. ../shared/data/t5_spiece/spiece.model).") from None


def validate_config(config) -> None:
    """Field types, ranges and paths; raises `ConfigError` naming the field, the value and the fix."""
    from miniend_jax.distill.objectives import INTERPOLATION_SCHEDULES, OBJECTIVES
    from miniend_jax.distill.student_init import INIT_MODES
    from miniend_jax.models.presets import get_preset
    _check(config.mode in MODES, "mode", config.mode, f"use one of {', '.join(MODES)}.")
    if config.mode == "export":
        return
    if config.mode == "plan":
        p = config.plan
        _check(p.step in ("distill", "pretrain", "finetune"), "plan.step", p.step,
               "use 'distill', 'pretrain' or 'finetune': the mode whose train step to plan.")
        _check(isinstance(p.devices, int) and p.devices >= 0, "plan.devices", p.devices,
               "use the number of devices (chips) to plan for, or 0 for the product of the mesh sizes.")
        _check(p.hbm_gib > 0, "plan.hbm_gib", p.hbm_gib, "use the accelerator's memory per device in GiB.")
        return
    if config.mode in ("finetune", "evaluate"):
        _validate_downstream(config)
        if config.mode == "evaluate":
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
    _check_vocab_file(d.vocab)
    for field in ("inputs_length",):
        _check(isinstance(d[field], int) and d[field] >= 8, f"data.{field}", d[field], "use an integer >= 8.")
    _check(0 < d.noise_density < 1, "data.noise_density", d.noise_density, "use a value in (0, 1), T5: 0.15.")
    _check(d.mean_noise_span_length >= 1, "data.mean_noise_span_length", d.mean_noise_span_length,
           "use a value >= 1 (tokens per noise span), T5: 3.")
    from tasks.lengths import lengths_for_inputs
    _, produced = lengths_for_inputs(d.inputs_length, d.noise_density, d.mean_noise_span_length)
    _check(d.targets_length <= 0 or d.targets_length >= produced, "data.targets_length", d.targets_length,
           f"span corruption of data.inputs_length={d.inputs_length} makes targets of {produced} tokens (with EOS); "
           f"use data.targets_length >= {produced}, or 0 for exactly that.")
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


def _validate_downstream(config) -> None:
    from miniend_jax.models.presets import get_preset
    m, t, dec = config.model, config.tasks, config.decode
    _check(m.source in ("hf", "miniend", "preset"), "model.source", m.source, "use 'hf', 'miniend' or 'preset'.")
    if m.source in ("hf", "miniend"):
        _check(bool(m.path) and os.path.isdir(m.path), "model.path", m.path,
               "point it at an existing directory (a HF checkpoint or a miniend_jax workdir).")
    else:
        get_preset(m.preset)
    _check(isinstance(m.dropout_rate, float) and 0.0 <= m.dropout_rate < 1.0, "model.dropout_rate", m.dropout_rate,
           "use a value in [0, 1); T5 finetunes with 0.1.")
    _check_vocab_file(config.data.vocab)
    _check(bool(eval_task_names(config)), "tasks.eval", t.eval, "name at least one Task, e.g. 'glue_sst2'.")
    if config.mode == "finetune":
        _check(bool(t.train), "tasks.train", t.train, "name the Task or Mixture to finetune on, e.g. 'glue_sst2'.")
    for field in ("inputs_length", "targets_length"):
        _check(isinstance(t[field], int) and t[field] >= 2, f"tasks.{field}", t[field], "use an integer >= 2.")
    _check(isinstance(t.eval_examples, int) and t.eval_examples >= 0, "tasks.eval_examples", t.eval_examples,
           "use 0 (the whole split) or a positive number of examples.")
    for directory in _classification_dirs(config):
        _check(os.path.isfile(os.path.join(directory, "train.tsv")), "tasks.classification_dirs", directory,
               "each directory needs train.tsv and dev.tsv of `text<TAB>label` lines.")
    for field in ("glue_source", "summarization_source"):
        _check(t[field] in ("local", "tfds"), f"tasks.{field}", t[field], "use 'local' or 'tfds'.")
    _check(not t.best_metric or t.best_metric.count("/") == 1, "tasks.best_metric", t.best_metric,
           "use 'task/metric', e.g. 'glue_sst2/accuracy', or '' for the first eval task's main metric.")
    _check(isinstance(dec.num_beams, int) and dec.num_beams >= 1, "decode.num_beams", dec.num_beams,
           "use 1 (greedy) or more beams.")
    _check(isinstance(dec.batch_size, int) and dec.batch_size >= 1, "decode.batch_size", dec.batch_size,
           "use a positive integer.")
    _check(isinstance(dec.max_length, int) and dec.max_length >= 0, "decode.max_length", dec.max_length,
           "use 0 (the targets length) or a positive number of tokens.")


def validate_layout(config, process_count: int, device_count: int) -> tuple[int, int, int]:
    from miniend_jax import parallel
    mesh = config.mesh
    shape = parallel.mesh_shape(mesh.data, mesh.fsdp, mesh.tensor, device_count)
    parallel.rules_from_config(mesh.rules)
    tr = config.train
    batch_shards = shape[0] * shape[1]
    micro = tr.batch_size // tr.microbatches
    _check(micro % batch_shards == 0, "train.batch_size", tr.batch_size,
           f"each microbatch ({micro} examples) must divide over data*fsdp={batch_shards} devices.")
    _check(tr.batch_size % process_count == 0, "train.batch_size", tr.batch_size,
           f"must divide over {process_count} processes.")
    return shape


def check_workdir(config, workdir: str) -> None:
    """Refuses a workdir that holds another run's config (unless `overwrite_config`); writes nothing.

    Raises:
      ConfigError: naming the first differing field and the fix.
    """
    path = os.path.join(workdir, "config.json")
    resolved = json.loads(config.to_json_best_effort())
    if os.path.exists(path) and not config.get("overwrite_config", False):
        with open(path) as f:
            previous = json.load(f)
        from flax import traverse_util
        old = traverse_util.flatten_dict(previous, sep=".")
        new = traverse_util.flatten_dict(resolved, sep=".")
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
                         and not k.startswith("mesh.rules."))
        if changed:
            key = changed[0]
            raise ConfigError(f"workdir {workdir} holds a different run (config.json has {key}={old.get(key)!r}, "
                              f"this run {new.get(key)!r}); use a new --workdir, or set "
                              "--config.overwrite_config=True to continue it with the new config.")


def check_models_divide(config, shape, models) -> None:
    """Every sharded parameter dimension of each `(role, T5Config or None)` divides over the mesh `shape`
    under the run's axis rules (`parallel.check_divisible`); raises `ConfigError` before any compile."""
    from miniend_jax import parallel
    from miniend_jax.models.t5 import abstract_params
    rules = parallel.rules_from_config(config.mesh.get("rules", {}))
    for role, model_config in models:
        if model_config is not None:
            parallel.check_divisible(abstract_params(model_config), shape, rules, role)


def write_resolved_config(config, workdir: str) -> None:
    """Writes `config.json` (process 0), after `check_workdir`; call it only once everything that can be
    checked (config, data, weights) has been, so that a failed start leaves the workdir as it was."""
    check_workdir(config, workdir)
    path = os.path.join(workdir, "config.json")
    resolved = json.loads(config.to_json_best_effort())
    os.makedirs(workdir, exist_ok=True)
    import jax
    if jax.process_index() == 0:
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
    try:
        meta = read_meta(workdir)
    except FileNotFoundError:
        raise ConfigError(f"--workdir={workdir!r} holds no checkpoint to export; train first or fix the path.") from None
    model_config = saved_model_config(meta, workdir)
    abstract = _host_abstract(model_config)
    params, _ = restore_params(workdir, abstract, jax.tree.map(lambda _: _host_sharding(), abstract))
    path = config.export.path or os.path.join(workdir, "hf_student")
    if jax.process_index() == 0:  # every host holds the gathered parameters; one writes them
        vocab = config.data.vocab if os.path.isfile(config.data.vocab) else None
        save_hf_checkpoint(path, model_config, jax.device_get(params), spiece_model=vocab,
                           extra_ids=config.data.extra_ids)
        print(f"exported step {meta['step']} to {path}", flush=True)
    return path


def _check_vocab(config, models) -> None:
    from miniend_jax.checkpoints.tokenizer import vocab_size
    tokens = vocab_size(config.data.vocab, config.data.extra_ids)
    for role, model in models:
        if model is not None and model.vocab_size < tokens:
            raise ConfigError(f"{role} vocab_size={model.vocab_size} is smaller than the tokenizer's {tokens} ids "
                              f"(data.vocab={config.data.vocab!r}); use a model with vocab_size >= {tokens}.")


def _check_loaded(params, model_config, role: str, path: str) -> None:
    import jax
    expected = jax.tree.map(lambda x: x.shape, _host_abstract(model_config))
    got = jax.tree.map(lambda x: x.shape, params)
    if expected != got:
        raise ConfigError(f"{role}.path={path!r}: the parameters do not have the shapes of the model's config; "
                          "the checkpoint is damaged or of another architecture.")


def _placed_params(model_config, params, mesh, rules, seed: int):
    import jax
    from miniend_jax import parallel
    from miniend_jax.models.t5 import init_params
    boxed = jax.eval_shape(lambda: init_params(model_config, jax.random.PRNGKey(seed)))
    return jax.device_put(params, parallel.logical_sharding(boxed, mesh, rules))


def evaluate(config, workdir: str) -> dict:
    """Scores `config.model` on the `tasks.eval_split` of each of `tasks.eval`; writes results.json/.md."""
    import jax
    from miniend_jax import parallel
    from miniend_jax.evaluation.evaluator import TaskEvaluator, markdown_table, write_results
    from miniend_jax.models.t5 import T5
    shape = parallel.mesh_shape(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, jax.device_count())
    model_config = source_config(config.model, "model")
    _check_vocab(config, [("model", model_config)])
    check_models_divide(config, shape, [("model", model_config)])
    check_tasks(config, register_tasks(config))
    model_config, params = load_source(config.model, model_config, config.seed)
    _check_loaded(params, model_config, "model", config.model.path)
    mesh = parallel.make_mesh(*shape)
    rules = parallel.rules_from_config(config.mesh.rules)
    params = _placed_params(model_config, params, mesh, rules, config.seed)
    t = config.tasks
    evaluator = TaskEvaluator(eval_task_names(config), t.eval_split, T5(model_config), mesh, rules,
                              inputs_length=t.inputs_length, targets_length=t.targets_length,
                              decode=_decode_settings(config), num_examples=t.eval_examples)
    results = evaluator.evaluate(params)
    name = _model_name(config)
    payload = write_results(workdir, results, step=None, model=name)
    if jax.process_index() == 0:
        print(markdown_table(results, payload, title=name), flush=True)
    return payload


def finetune(config, workdir: str):
    """Finetunes `config.model` on `tasks.train`; keeps the best checkpoint by `tasks.best_metric`."""
    import jax
    from miniend_jax import parallel
    from miniend_jax.train.loop import Models, Trainer
    shape = validate_layout(config, jax.process_count(), jax.device_count())
    model_config = source_config(config.model, "model", dropout_rate=config.model.dropout_rate)
    _check_vocab(config, [("model", model_config)])
    check_models_divide(config, shape, [("model", model_config)])
    check_tasks(config, register_tasks(config))
    check_workdir(config, workdir)
    data = build_task_data(config, jax.process_index(), jax.process_count())
    model_config, params = load_source(config.model, model_config, config.seed)
    _check_loaded(params, model_config, "model", config.model.path)
    from miniend_jax.checkpoints.state import check_resumable
    check_resumable(workdir, model_config)
    write_resolved_config(config, workdir)
    models = Models(spec=distill_spec(config), student_config=model_config, student_init=lambda abstract: params)
    mesh = parallel.make_mesh(*shape)
    trainer = Trainer(config, workdir, models, data, mesh, on_evaluate=BestCheckpoint(config, workdir, model_config))
    return trainer.run()


def initialize_distributed(config) -> None:
    """Joins this process to a multi-host run (`config.distributed`); must precede any JAX computation."""
    import jax
    d = config.distributed
    if not d.enabled or jax.distributed.is_initialized():
        return
    if d.coordinator_address:
        _check(isinstance(d.num_processes, int) and d.num_processes >= 1, "distributed.num_processes",
               d.num_processes, "must be a positive integer: the number of processes in the run.")
        _check(isinstance(d.process_id, int) and 0 <= d.process_id < d.num_processes, "distributed.process_id",
               d.process_id, f"must lie in [0, {d.num_processes}): this process's index, unique per host.")
        explicit = dict(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                        process_id=d.process_id)
    else:
        explicit = {}
    jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
    # A peer that stops (an error, a kill) ends every other process's collectives within the timeout,
    # rather than leaving them waiting for it.
    jax.distributed.initialize(**explicit, initialization_timeout=d.timeout_seconds,
                               heartbeat_timeout_seconds=d.timeout_seconds)
    if jax.process_index() == 0:
        print(f"distributed: {jax.process_count()} processes, {jax.device_count()} devices "
              f"({jax.local_device_count()} per process)", flush=True)


def run(config, workdir: str):
    """Runs `config` in `workdir`; returns the final train state (or the export path, or the results)."""
    import jax
    if not workdir:
        raise ConfigError("--workdir is required: the directory for checkpoints, metrics and the config.")
    validate_config(config)
    if config.mode == "plan":
        from miniend_jax.plan import run_plan
        return run_plan(config, workdir)
    initialize_distributed(config)
    if config.mode == "export":
        return export(config, workdir)
    if config.mode == "evaluate":
        return evaluate(config, workdir)
    if config.mode == "finetune":
        return finetune(config, workdir)

    from miniend_jax import parallel
    from miniend_jax.distill.student_init import check_copyable, copy_teacher_layers
    from miniend_jax.train.loop import Models, Trainer

    shape = validate_layout(config, jax.process_count(), jax.device_count())
    spec = distill_spec(config)
    student = student_config(config)
    teacher = teacher_config(config) if spec.needs_teacher else None
    spec.check_models(teacher, student)
    _check_vocab(config, [("student", student), ("teacher", teacher)])
    check_models_divide(config, shape, [("student", student), ("teacher", teacher)])
    if config.student.init == "teacher_layers":
        if teacher is None:
            raise ConfigError("student.init='teacher_layers' needs a teacher; use mode=distill or student.init='random'.")
        check_copyable(teacher, student)
    check_workdir(config, workdir)
    data = build_data(config, jax.process_index(), jax.process_count())
    teacher_params = None
    if teacher is not None:
        teacher, teacher_params = load_teacher(config, teacher)
        _check_loaded(teacher_params, teacher, "teacher", config.teacher.path)
    from miniend_jax.checkpoints.state import check_resumable
    check_resumable(workdir, student)
    write_resolved_config(config, workdir)
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


def _simulate_devices_for_plan(config) -> None:
    """mode=plan compiles for `plan.devices` devices: simulate them on the CPU (before JAX starts)."""
    if config.mode != "plan" or ("jax" in sys.modules and _jax_backend_started()):
        return
    from miniend_jax.plan import required_devices
    flag = f"--xla_force_host_platform_device_count={required_devices(config)}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    os.environ["JAX_PLATFORMS"] = "cpu"


def _jax_backend_started() -> bool:
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        _simulate_devices_for_plan(FLAGS.config)
        run(FLAGS.config, FLAGS.workdir)
    except MiniEndError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.modules.setdefault("miniend_jax.main", sys.modules[__name__])  # one module, one set of flags
    flags.mark_flags_as_required(["config"])
    app.run(main)
