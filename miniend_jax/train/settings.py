"""Typed settings of the training library, built once from the config (`from_config`, called by
`build.train_settings`): the loop, the step and the optimizer read these, never the raw `ConfigDict`.

Each is frozen, so a step built from one cannot drift from the settings the run checked. The values are
the config's own (`configs/base.py` documents each field); their range checks live with their consumer
(`state.make_optimizer`, `config_checks`), which run before any training.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AdafactorSettings:
    """`optim.adafactor`: t5x's Adafactor for T5 (see `state.make_optimizer`)."""

    decay_rate: float = 0.8
    clipping_threshold: float = 1.0
    momentum: float = 0.0
    min_dim_size_to_factor: int = 128
    eps: float = 1e-30


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """`optim`: the optimizer, its learning-rate schedule and clipping (see `state.make_optimizer`).

    `warmup_steps` >= 0 counts steps; negative takes `warmup_fraction` of the run's steps.
    """

    name: str = "adamw"
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    warmup_fraction: float = 0.0
    warmup_steps: int = 0
    decay: str = "linear"
    end_lr_fraction: float = 0.0
    clip_norm: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    min_param_scale: float = 1e-3
    adafactor: AdafactorSettings = AdafactorSettings()

    @classmethod
    def from_config(cls, optim) -> "OptimSettings":
        """The settings of a config's `optim` section (a `ConfigDict` or mapping); absent fields keep the
        defaults above."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"adafactor"}
        values = {k: v for k, v in dict(optim).items() if k in fields}
        adafactor = dict(optim.get("adafactor") or {})
        known = {f.name for f in dataclasses.fields(AdafactorSettings)}
        return cls(**values, adafactor=AdafactorSettings(**{k: v for k, v in adafactor.items() if k in known}))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What the loop and its step read: `train.*`, the seed, the optimizer, the mesh's axis rules and the
    fault-injection switch.

    Attributes:
      steps, batch_size (global, in examples), microbatches, log_every, checkpoint_every, keep_checkpoints,
        async_checkpoints, eval_every (0: at the end only), eval_batches, max_consecutive_nonfinite: `train.*`.
      seed: the run's seed (initialisation and dropout).
      optim: the optimizer's settings.
      axis_rules: logical axis -> mesh axis (`parallel.rules_from_config` of `mesh.rules`).
      nan_loss_at_step: `debug.nan_loss_at_step` (-1: never).
    """

    steps: int
    batch_size: int
    optim: OptimSettings
    microbatches: int = 1
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    eval_every: int = 0
    eval_batches: int = 20
    max_consecutive_nonfinite: int = 20
    seed: int = 0
    axis_rules: tuple = ()
    nan_loss_at_step: int = -1

    @classmethod
    def from_config(cls, config) -> "TrainSettings":
        """The settings of a whole run config."""
        from miniend_jax import parallel
        train = config.train
        fields = {f.name for f in dataclasses.fields(cls)} - {"optim", "seed", "axis_rules", "nan_loss_at_step"}
        debug = config.get("debug") or {}
        return cls(**{k: v for k, v in dict(train).items() if k in fields}, optim=OptimSettings.from_config(config.optim),
                   seed=int(config.seed), axis_rules=parallel.rules_from_config(config.mesh.get("rules", {})),
                   nan_loss_at_step=int(debug.get("nan_loss_at_step", -1)))
