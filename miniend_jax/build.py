"""Config -> objects: model configs, parameters on the host and on the mesh, the distillation spec, and
the decoding settings. Used by the modes, `plan`, the benchmarks, the demo, the experiment and the tests.

Nothing here trains or writes. Weights are read only by `load_model` / `load_teacher` /
`restore_workdir`; every other function works from shapes.
"""

from __future__ import annotations

import numpy as np

from miniend_jax.errors import CheckpointError, ConfigError, check

MODEL_SOURCES = ("hf", "miniend", "preset")


def check_model_source(section, role: str) -> None:
    """A model section's `source` is one `model_config` reads.

    Raises:
      ConfigError: naming `<role>.source` and the sources there are.
    """
    check(section.source in MODEL_SOURCES, f"{role}.source", section.source, f"use one of {', '.join(MODEL_SOURCES)}.")


def distill_spec(config):
    """The run's `DistillSpec` (`config.distill`; finetuning trains on cross-entropy: objective `pretrain`).

    Raises:
      ConfigError: an unknown objective or term, or a non-positive temperature or relation-head count.
    """
    from miniend_jax.distill.objectives import DistillSpec, Interpolation
    d = config.distill
    objective = d.objective if config.mode == "distill" else "pretrain"
    return DistillSpec(objective=objective, relation_heads=d.relation_heads,
                       teacher_encoder_layer=d.teacher_layers.encoder,
                       teacher_decoder_layer=d.teacher_layers.decoder,
                       student_encoder_layer=d.student_layers.encoder,
                       student_decoder_layer=d.student_layers.decoder, temperature=d.temperature,
                       weights=tuple(sorted(d.weights.to_dict().items())),
                       interpolation=Interpolation(start=float(d.interpolation.start), steps=int(d.interpolation.steps),
                                                   schedule=d.interpolation.schedule, space=d.interpolation.space))


def train_settings(config):
    """The `TrainSettings` the loop and its step read (`train.*`, seed, optimizer, axis rules), built once
    from the config."""
    from miniend_jax.train.settings import TrainSettings
    return TrainSettings.from_config(config)


def student_config(config):
    """The student's model config: `student.preset` (any family's) with its overrides and dtypes.

    Raises:
      ConfigError: an unknown preset or override.
    """
    from miniend_jax.models.registry import get_preset
    s = config.student
    return get_preset(s.preset, **{**s.overrides.to_dict(), "dtype": s.dtype, "param_dtype": s.param_dtype,
                                   "scan_layers": s.scan_layers})


def model_config(section, role: str, dropout_rate: float = 0.0):
    """The model config of a model section (`teacher` or `model`: source, path, preset, overrides, dtypes),
    from its preset, HF `config.json` (its `model_type` names the family) or miniend checkpoint meta (its
    `family`), without reading weights.

    Raises:
      ConfigError: an unknown source or preset, or a path that holds no checkpoint.
      CheckpointError: the checkpoint's config cannot be read.
    """
    from miniend_jax.checkpoints import hf
    from miniend_jax.models.registry import get_preset
    check_model_source(section, role)
    dtypes = {"dtype": section.dtype, "param_dtype": section.param_dtype, "dropout_rate": dropout_rate,
              "scan_layers": section.scan_layers}
    if section.source == "preset":
        return get_preset(section.preset, **{**section.overrides.to_dict(), **dtypes})
    if section.source == "hf":
        return hf.config_from_hf(hf.read_config(section.path), **dtypes)
    return saved_model_config(section.path, role, **dtypes)


def teacher_config(config):
    """The teacher's model config from its source, without reading weights (see `model_config`)."""
    return model_config(config.teacher, "teacher")


def saved_model_config(workdir: str, role: str = "workdir", **changes):
    """The model config (with `changes`) that the newest checkpoint of a miniend workdir records, of the
    family its meta names.

    Raises:
      ConfigError: `workdir` holds no checkpoint, or one of a family this version does not build.
      CheckpointError: its config is not one this version reads.
    """
    from miniend_jax.checkpoints.state import check_family, read_meta
    from miniend_jax.models.registry import get_family
    try:
        meta = read_meta(workdir)
    except FileNotFoundError:
        raise ConfigError(f"{role}.path={workdir!r} holds no miniend_jax checkpoint; point it at the workdir of a "
                          "finished pretrain, distill or finetune run.") from None
    family = check_family(meta, f"{role}.path={workdir!r}")
    try:
        return get_family(family).config_cls(**{**meta["model"], **changes})
    except (TypeError, KeyError) as error:
        raise CheckpointError(f"{workdir}: the checkpoint's model config cannot be read ({error}); it was written by "
                              "another version of miniend_jax or is damaged.") from None


def host_abstract(model_config):
    """The unboxed parameter tree of `model_config` as `jax.ShapeDtypeStruct`s (allocates nothing)."""
    import flax.linen as nn
    from miniend_jax.models.registry import abstract_params
    return nn.unbox(abstract_params(model_config))


def restore_workdir(workdir: str, model_config=None, step: int | None = None):
    """The parameters of a miniend workdir's newest (or `step`'s) checkpoint, on the host.

    Args:
      workdir: a pretrain, distill or finetune workdir.
      model_config: the model config to restore into (its `scan_layers` may differ from the saved layout;
        the parameters are converted and cast to its `param_dtype`); default: the saved config.
      step: a checkpoint step; default the newest.

    Returns:
      `(model_config, params, meta)`: params a nested dict of numpy arrays; meta the checkpoint's
      step, model config and family.

    Raises:
      ConfigError: `workdir` holds no checkpoint.
      CheckpointError: the checkpoint is damaged, of another family, or unreadable by this version.
    """
    import jax
    from miniend_jax.checkpoints.state import restore_params
    from miniend_jax.models.registry import to_layout
    saved = saved_model_config(workdir)
    if model_config is None:
        model_config = saved
    else:  # restored in the layout it was saved in, then converted to the one asked for
        saved = model_config.replace(scan_layers=saved.scan_layers)
    abstract = host_abstract(saved)
    host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    params, meta = restore_params(workdir, abstract, jax.tree.map(lambda _: host, abstract), step=step)
    dtype = jax.numpy.dtype(model_config.param_dtype)
    params = jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)
    return model_config, to_layout(params, model_config), meta


def load_model(section, expected, seed: int, role: str = "model"):
    """`(config, host params)` of a model section: random init of a preset, a HF directory, or a miniend
    workdir. `expected` is its `model_config`; the loaded parameters are checked against its shapes.

    Raises:
      ConfigError: the parameters do not have the shapes of `expected`.
      CheckpointError: the checkpoint cannot be read.
    """
    import flax.linen as nn
    import jax
    from miniend_jax.models.registry import init_params
    if section.source == "preset":
        params = nn.unbox(init_params(expected, jax.random.PRNGKey(seed)))
        return expected, jax.tree.map(np.asarray, params)
    if section.source == "hf":
        from miniend_jax.checkpoints.hf import load_hf_checkpoint
        loaded, params = load_hf_checkpoint(section.path, dtype=section.dtype, param_dtype=section.param_dtype,
                                            dropout_rate=expected.dropout_rate, scan_layers=section.scan_layers)
    else:
        loaded, params, _ = restore_workdir(section.path, expected)
    check_loaded(params, loaded, role, section.path)
    return loaded, params


def load_teacher(config, expected):
    """`(config, host params)` of the teacher; `expected` is `teacher_config(config)`."""
    return load_model(config.teacher, expected, config.seed + 1, role="teacher")


def check_loaded(params, model_config, role: str, path: str) -> None:
    """Raises `ConfigError` unless `params` have exactly the shapes `model_config` builds."""
    import jax
    expected = jax.tree.map(lambda x: x.shape, host_abstract(model_config))
    got = jax.tree.map(lambda x: x.shape, params)
    if expected != got:
        raise ConfigError(f"{role}.path={path!r}: the parameters do not have the shapes of the model's config; "
                          "the checkpoint is damaged or of another architecture.")


def model_on_mesh(config, shape, model_config):
    """`config.model` loaded (`load_model`) and placed on a new mesh of `shape` under the run's axis rules,
    after `config_checks.preflight` gave `shape` and `model_config`.

    Returns:
      (model config as loaded, placed params, mesh, axis rules).
    """
    from miniend_jax import parallel
    model_config, params = load_model(config.model, model_config, config.seed)
    mesh = parallel.make_mesh(*shape)
    rules = parallel.rules_from_config(config.mesh.get("rules", {}))
    return model_config, placed_params(model_config, params, mesh, rules), mesh, rules


def placed_params(model_config, params, mesh, rules):
    """Host `params` placed on `mesh` with the `NamedSharding`s of their logical axes under `rules`."""
    import jax
    from miniend_jax import parallel
    from miniend_jax.models.registry import abstract_params
    boxed = abstract_params(model_config)
    return jax.device_put(params, parallel.logical_sharding(boxed, mesh, rules))


def decode_settings(config):
    """The `DecodeSettings` of `config.decode` (beams, batch size, maximum length, length penalty, logits
    processors).

    `decode.length_penalty_rule="auto"` resolves here: a HF model (`model.source="hf"`) is decoded as its
    checkpoint asks (`hf.generation_settings`: `generation_config.json`, or for BART the same fields in a
    transformers-4 `config.json`): its minimum length, n-gram blocking, forced BOS/EOS and early stopping
    replace `decode`'s, and where it sets `length_penalty`, HF's rule (`len ** alpha`) with that alpha. Any
    other model takes its family's defaults (`Family.generation_defaults`: BART's forced `<s>` and `</s>` and
    3-gram blocking) and T5's rule (`((5 + len) / 6) ** alpha`, t5x) with `decode.length_penalty`.

    Raises:
      ConfigError: the checkpoint's generation settings cannot be read."""
    from miniend_jax.evaluation.evaluator import DecodeSettings
    settings = config.decode.to_dict()
    if settings["length_penalty_rule"] == "auto":
        settings.update(length_penalty_rule="t5", early_stopping=False)   # the model's files decide both
        if config.model.source == "hf":
            from miniend_jax.checkpoints import hf
            asked = hf.generation_settings(config.model.path)
        else:
            from miniend_jax.models.registry import family_of
            resolved = model_config(config.model, "model")
            asked = family_of(resolved).generation_defaults(resolved)
        for field in ("min_length", "no_repeat_ngram_size", "forced_bos_token_id", "forced_eos_token_id"):
            if isinstance(asked.get(field), int):
                settings[field] = asked[field]
        if isinstance(asked.get("length_penalty"), (int, float)):
            settings.update(length_penalty_rule="hf", length_penalty=float(asked["length_penalty"]),
                            early_stopping=asked.get("early_stopping") is True)
    return DecodeSettings(**settings)


def model_name(config) -> str:
    """How results name `config.model`: its path, or `random <preset>`."""
    m = config.model
    return m.path if m.source in ("hf", "miniend") else f"random {m.preset}"
