"""The student's train state and optimizer (the teacher is never part of either)."""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from miniend_jax.errors import ConfigError, check
from miniend_jax.train.settings import OptimSettings


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


# Parameters never decayed, by name: layer-norm scales, biases (BART's projections and layer norms), and
# BART's `final_logits_bias`, a constant buffer in HF (no gradient reaches it; decay alone would erase it).
_NO_DECAY = ("scale", "bias", "final_logits_bias")


def _decay_mask(params):
    """Weight decay on matrices (kernels, embeddings, position tables), not on layer-norm scales, biases or
    BART's logits bias (by name: a scanned stack's scales are `[depth, d_model]`), as HF's trainers and
    fairseq exclude biases and layer norms."""
    return jax.tree_util.tree_map_with_path(lambda path, p: getattr(path[-1], "key", None) not in _NO_DECAY, params)


OPTIMIZERS = ("adamw", "adamw_scaled", "adafactor")


def warmup_steps(optim, total_steps: int) -> int:
    """`optim.warmup_steps`, or `optim.warmup_fraction` of `total_steps` when it is negative."""
    return optim.warmup_steps if optim.warmup_steps >= 0 else int(round(optim.warmup_fraction * total_steps))


def make_optimizer(optim, total_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """The optimizer named by `optim.name`, with warm-up and decay and optional global-norm clipping.

    - `adamw`: AdamW (Loshchilov & Hutter 2019): `p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`. Every
      parameter moves by about `lr` a step, whatever its scale: on T5's initialisation (embeddings std 1,
      queries std (d_model * d_kv)^-1/2) the attention weights change by 100% while the embeddings barely
      move (METHOD.md, "Optimizer").
    - `adamw_scaled`: Adam's direction with each update multiplied by `max(min_param_scale, RMS(p))`, the
      RMS of its own parameter (nanoT5's AdamWScale, Nawrot 2023; the relative step of Adafactor):
      `p -= lr * (max(min_param_scale, RMS(p)) * m_hat / (sqrt(v_hat) + eps) + wd * p)` (nanoT5 adds eps
      before the bias correction, `eps / sqrt(1 - b2^t)` in these terms, and decays after the step).
    - `adafactor`: Adafactor (Shazeer & Stern 2018) as t5x configures it for T5 (optax's implementation):
      second moments factored into row and column means for arrays whose two largest dimensions are at
      least `adafactor.min_dim_size_to_factor`, decay `1 - (t + 1)^-adafactor.decay_rate`, `adafactor.eps`
      added to the squared gradient, updates clipped to RMS `adafactor.clipping_threshold`, steps
      relative to the parameter's RMS (at least `min_param_scale`), no momentum unless
      `adafactor.momentum` > 0 (an average of the scaled steps, as t5x's `beta1`). Weight decay, when
      `weight_decay` > 0, subtracts `lr * wd * p` as AdamW's does.

    Weight decay never applies to layer-norm scales. A scanned stack (`scan_layers`) is one array per
    parameter, so the relative scale and Adafactor's clipping take the RMS over all its layers at once.

    Args:
      optim: `OptimSettings` (a config's `optim` section is converted to them): `name`, `learning_rate`,
        `warmup_steps` (or `warmup_fraction` of `total_steps` when negative), `decay`, `end_lr_fraction`,
        `clip_norm` (no clipping when <= 0), `b1`, `b2`, `eps`, `weight_decay`, `min_param_scale`, and
        `adafactor`.
      total_steps: steps of the whole run.

    Returns:
      (the optimizer, its learning-rate schedule).

    Raises:
      ConfigError: an unknown `optim.name` or `optim.decay`, or a value out of its range.
    """
    if not isinstance(optim, OptimSettings):
        optim = OptimSettings.from_config(optim)
    name = optim.name
    check(name in OPTIMIZERS, "optim.name", name, f"use one of {', '.join(OPTIMIZERS)}.")
    check(optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay, "use a value >= 0 (0: none).")
    schedule = learning_rate_schedule(optim.learning_rate, total_steps, warmup_steps(optim, total_steps),
                                      optim.decay, optim.end_lr_fraction)
    parts = []
    if optim.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.clip_norm))
    if name == "adamw":
        parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                                 weight_decay=optim.weight_decay, mask=_decay_mask))
        return optax.chain(*parts), schedule
    min_scale = optim.min_param_scale
    check(min_scale > 0, "optim.min_param_scale", min_scale, "use a small positive value (T5: 1e-3).")
    decay = optim.weight_decay
    if name == "adamw_scaled":
        parts += [optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps),
                  optax.scale_by_param_block_rms(min_scale)]
        if decay > 0:
            parts.append(optax.add_decayed_weights(decay, mask=_decay_mask))
        parts.append(optax.scale_by_learning_rate(schedule))
        return optax.chain(*parts), schedule
    a = optim.adafactor
    check(0 < a.decay_rate <= 1, "optim.adafactor.decay_rate", a.decay_rate, "use a value in (0, 1]; T5: 0.8.")
    check(a.clipping_threshold >= 1 or a.clipping_threshold <= 0, "optim.adafactor.clipping_threshold",
          a.clipping_threshold, "use a value >= 1 (T5: 1.0), or 0 for no clipping.")
    check(0 <= a.momentum < 1, "optim.adafactor.momentum", a.momentum, "use a value in [0, 1); 0: none (T5).")
    check(isinstance(a.min_dim_size_to_factor, int) and a.min_dim_size_to_factor >= 1,
          "optim.adafactor.min_dim_size_to_factor", a.min_dim_size_to_factor, "use a positive integer; T5: 128.")
    check(a.eps > 0, "optim.adafactor.eps", a.eps, "use a small positive value; T5: 1e-30.")
    # optax.adafactor's chain, spelled out so that the relative step's minimum is `min_param_scale` and
    # weight decay is scaled by the learning rate (optax.adafactor adds `rate * p` after the rate).
    parts.append(optax.scale_by_factored_rms(decay_rate=a.decay_rate, min_dim_size_to_factor=a.min_dim_size_to_factor,
                                             epsilon=a.eps))
    if a.clipping_threshold > 0:
        parts.append(optax.clip_by_block_rms(a.clipping_threshold))
    parts += [optax.scale_by_learning_rate(schedule, flip_sign=False), optax.scale_by_param_block_rms(min_scale)]
    if a.momentum > 0:
        parts.append(optax.ema(a.momentum, debias=False))
    if decay > 0:
        parts.append(optax.add_decayed_weights(lambda count: decay * schedule(count), mask=_decay_mask))
    parts.append(optax.scale(-1.0))
    return optax.chain(*parts), schedule


def boxed_train_state(boxed_params, optimizer: optax.GradientTransformation) -> TrainState:
    """The abstract `TrainState` of `boxed_params` (logically boxed ShapeDtypeStructs, as from
    `jax.eval_shape(init_params)`), with every optimizer-state array boxed with its logical axes, so that
    `parallel.logical_sharding` lays it out like its parameter.

    An array shaped like its parameter (Adam's moments, Adafactor's unfactored second moment, a momentum)
    takes the parameter's axes; Adafactor's factored statistics take them with the reduced dimension
    removed (the row statistic drops the largest dimension, the column statistic the second largest:
    optax's `scale_by_factored_rms`), as t5x's Adafactor derives its factored shardings from the
    parameter's axes; counters and placeholders are replicated.
    """
    params = nn.unbox(boxed_params)
    opt_state = jax.eval_shape(optimizer.init, params)
    names = jax.tree.map(lambda p: tuple(p.names) if isinstance(p, nn.Partitioned) else (None,) * len(p.shape),
                         boxed_params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    params_def = jax.tree.structure(params)
    flat_names = params_def.flatten_up_to(names)
    flat_params = params_def.flatten_up_to(params)

    def box(leaf, axes):
        axes = tuple(axes) if axes is not None and len(axes) == len(leaf.shape) else (None,) * len(leaf.shape)
        return nn.Partitioned(leaf, names=axes) if leaf.shape else leaf

    def like_params(tree, axes_of):
        leaves = params_def.flatten_up_to(tree)
        return params_def.unflatten([box(leaf, axes_of(i, leaf)) for i, leaf in enumerate(leaves)])

    def walk(node):
        if isinstance(node, optax.FactoredState):
            # A parameter is factored when its unfactored statistic `v` is a placeholder.
            factored = [v.shape != p.shape for v, p in zip(params_def.flatten_up_to(node.v), flat_params)]

            def reduced(drop_largest):
                def axes_of(i, leaf):
                    if not factored[i]:
                        return None
                    order = np.argsort(flat_params[i].shape)  # optax's _factored_dims: the two largest
                    dropped = int(order[-1] if drop_largest else order[-2])
                    return tuple(n for d, n in enumerate(flat_names[i]) if d != dropped)
                return axes_of
            return node._replace(v_row=like_params(node.v_row, reduced(True)),
                                 v_col=like_params(node.v_col, reduced(False)),
                                 v=like_params(node.v, lambda i, leaf: None if factored[i] else flat_names[i]))
        if _mirrors(node, params_def):  # moments, momentum
            return like_params(node, lambda i, leaf: flat_names[i] if leaf.shape == flat_params[i].shape else None)
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(walk(child) for child in node))
        if isinstance(node, (tuple, list)):
            return type(node)(walk(child) for child in node)
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return box(node, None) if hasattr(node, "shape") else node

    return TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=boxed_params, opt_state=walk(opt_state))


def _mirrors(node, params_def) -> bool:
    """Whether `node` is a tree of arrays with exactly the parameters' structure."""
    return jax.tree.structure(node) == params_def
