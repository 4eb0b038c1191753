"""The student's train state and optimizer (the teacher is never part of either)."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from miniend_jax.errors import ConfigError


@flax.struct.dataclass
class TrainState:
    """Step counter, student parameters and optimizer state. Nothing of the teacher.

    Attributes:
      step: int32 scalar, the number of steps taken (skipped steps included).
      params: the student's unboxed parameter tree.
      opt_state: the optimizer's state for `params`.
    """

    step: jax.Array
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params, optimizer: optax.GradientTransformation) -> "TrainState":
        """Step 0, `params`, and `optimizer.init(params)`."""
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def learning_rate_schedule(peak: float, total_steps: int, warmup_steps: int, decay: str,
                           end_fraction: float = 0.0) -> Callable[[jax.Array], jax.Array]:
    """Linear warm-up to `peak`, then `linear`, `cosine` or `constant` until `total_steps`.

    Args:
      peak: the peak learning rate.
      total_steps: steps of the whole run (warm-up included).
      warmup_steps: steps of the linear ramp from 0; none when <= 0.
      decay: `linear`, `cosine` or `constant`.
      end_fraction: the final rate as a fraction of `peak` (linear and cosine).

    Returns:
      An optax schedule: int step -> float32 learning rate.

    Raises:
      ConfigError: an unknown `decay`.
    """
    decay_steps = max(total_steps - warmup_steps, 1)
    end = peak * end_fraction
    if decay == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    elif decay == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end_fraction)
    elif decay == "constant":
        after = optax.constant_schedule(peak)
    else:
        raise ConfigError(f"optim.decay={decay!r}: use 'linear', 'cosine' or 'constant'.")
    if warmup_steps <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), after], [warmup_steps])


def _decay_mask(params):
    """Weight decay on matrices (kernels, embeddings, position tables), not on layer-norm scales (by name:
    a scanned stack's scales are `[depth, d_model]`)."""
    return jax.tree_util.tree_map_with_path(lambda path, p: getattr(path[-1], "key", None) != "scale", params)


def make_optimizer(optim, total_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """AdamW with warm-up and decay, global-norm clipping. `optim` is the config's `optim` block.

    Weight decay applies to every parameter except layer-norm scales (Loshchilov & Hutter 2019, AdamW).

    Args:
      optim: fields `learning_rate`, `warmup_steps` (or `warmup_fraction` of `total_steps` when
        negative), `decay`, `end_lr_fraction`, `clip_norm` (no clipping when <= 0), `b1`, `b2`, `eps`,
        `weight_decay`.
      total_steps: steps of the whole run.

    Returns:
      (the optimizer, its learning-rate schedule).

    Raises:
      ConfigError: an unknown `optim.decay`.
    """
    warmup = optim.warmup_steps if optim.warmup_steps >= 0 else int(round(optim.warmup_fraction * total_steps))
    schedule = learning_rate_schedule(optim.learning_rate, total_steps, warmup, optim.decay, optim.end_lr_fraction)
    parts = []
    if optim.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.clip_norm))
    parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=_decay_mask))
    return optax.chain(*parts), schedule
