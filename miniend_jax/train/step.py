"""One jitted step: teacher forward (no gradient), student forward and backward, loss, update.

Microbatched gradient accumulation: the batch is split into k microbatches scanned in sequence.
Every loss term is normalised by the valid rows of the *whole* batch (`terms.denominators`), so the
accumulated gradient equals the full-batch gradient exactly (up to float summation order).

The models are used only through the seam of `models/interface.py`: the batch features of
`MODEL_INPUTS` are passed by keyword, and a `Seq2SeqOutput` comes back.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from miniend_jax.distill import objectives
from miniend_jax.distill.terms import denominators
from miniend_jax.distill.objectives import DistillSpec
from miniend_jax.models.interface import MODEL_INPUTS
from miniend_jax.train.state import TrainState


def _model_inputs(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The model's keyword arguments: the features of `MODEL_INPUTS` present in `batch`."""
    return {name: batch[name] for name in MODEL_INPUTS if name in batch}


def forward_terms(spec: DistillSpec, student: nn.Module, teacher: nn.Module | None, student_params, teacher_params,
                  batch, denominator, alpha, dropout_rng=None) -> tuple[jax.Array, dict]:
    """(weighted loss, {term: value}) of `batch` for the student's parameters.

    Args:
      spec: the distillation objective, with its interpolation (`spec.interpolation`).
      student, teacher: models of the `models/interface.py` seam (e.g. `T5`); `teacher` is used only
        when `spec.needs_teacher`, and no gradient flows into it.
      student_params, teacher_params: their unboxed parameters.
      batch: seqio features, int arrays `[batch, length]`: at least `encoder_input_tokens`,
        `decoder_input_tokens`, `decoder_target_tokens`; optionally `decoder_loss_weights` and
        `*_segment_ids`.
      denominator: `terms.denominators` of the whole batch.
      alpha: float32 scalar, the interpolation weight `a_t`.
      dropout_rng: a `jax.random` key to run the student with dropout; None for none.

    Returns:
      (float32 scalar loss, {term: float32 scalar}, unweighted).
    """
    enable_dropout = dropout_rng is not None
    student_out = student.apply({"params": student_params}, **_model_inputs(batch), enable_dropout=enable_dropout,
                                taps=spec.taps("student"),
                                rngs={"dropout": dropout_rng} if enable_dropout else None)
    teacher_out = None
    if spec.needs_teacher:
        teacher_out = teacher.apply({"params": teacher_params}, **_model_inputs(batch), taps=spec.taps("teacher"))
        teacher_out = jax.lax.stop_gradient(teacher_out)
    terms = objectives.compute_terms(spec, teacher_out, student_out, batch, denominator, alpha)
    return objectives.total_loss(spec, terms), terms


def _split_microbatches(batch, k: int):
    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} is not divisible into {k} microbatches")
        return x.reshape((k, x.shape[0] // k) + x.shape[1:])
    return jax.tree.map(split, batch)


def make_train_step(spec: DistillSpec, student: nn.Module, teacher: nn.Module | None,
                    optimizer: optax.GradientTransformation, schedule: Callable, *, microbatches: int = 1,
                    dropout_seed: int = 0, nan_loss_at_step: int = -1):
    """Returns `step(state, teacher_params, batch) -> (state, metrics)`, to be jitted by the caller.

    A non-finite loss or gradient skips the update: parameters and optimizer state stay as they were,
    the step counter advances, and `skipped` is 1.

    Args:
      spec: the distillation objective, with its interpolation (`spec.interpolation`).
      student, teacher: models of the `models/interface.py` seam; the student's dropout rates (any of
        `dropout_rate`, `attention_dropout`, `activation_dropout` above 0) decide whether it trains with
        dropout. `teacher` may be None when not `spec.needs_teacher`.
      optimizer: applied to the summed gradient (clipping, if any, is part of it).
      schedule: step -> learning rate, reported as `learning_rate`.
      microbatches: k; the batch's leading axis must be divisible by k.
      dropout_seed: seed of the dropout keys, folded with the step and the microbatch index.
      nan_loss_at_step: injects a NaN loss at that step (fault injection for tests; -1: never).

    Returns:
      `step(state, teacher_params, batch)`, where `batch` holds int arrays `[batch, length]` (see
      `forward_terms`). Its metrics are float32 scalars: `loss`, `loss/<term>` for each term, `grad_norm`
      (global L2 norm, before clipping) and `grad_norm/<key>` for each top-level key of the parameter tree
      (T5: `token_embedder`, `encoder`, `decoder`; BART also `final_logits_bias`), `learning_rate`, `alpha` and `skipped`.

    Raises:
      ValueError: at trace time, when the batch is not divisible into `microbatches`.
    """
    # Any dropout of the student's config (BART also has attention and activation dropout) needs the keys.
    use_dropout = any(getattr(student.config, name, 0.0) > 0
                      for name in ("dropout_rate", "attention_dropout", "activation_dropout"))

    def step(state: TrainState, teacher_params, batch):
        denominator = denominators(batch)
        alpha = spec.interpolation.alpha(state.step)
        rng = jax.random.fold_in(jax.random.PRNGKey(dropout_seed), state.step) if use_dropout else None

        def loss_fn(params, micro, micro_rng):
            loss, terms = forward_terms(spec, student, teacher, params, teacher_params, micro, denominator, alpha,
                                        micro_rng)
            if nan_loss_at_step >= 0:
                loss = jnp.where(state.step + 1 == nan_loss_at_step, jnp.nan, loss)
            return loss, terms

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        if microbatches == 1:
            (loss, terms), grads = grad_fn(state.params, batch, rng)
        else:
            micro = _split_microbatches(batch, microbatches)
            micro_rng = lambda index: jax.random.fold_in(rng, index) if use_dropout else None

            def accumulate(carry, xs):
                index, micro_batch = xs
                (loss, terms), grads = grad_fn(state.params, micro_batch, micro_rng(index))
                return jax.tree.map(jnp.add, carry, (loss, terms, grads)), None

            (loss0, terms0), grads0 = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro),
                                                     micro_rng(0))
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss0, terms0, grads0))
            (loss, terms, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(microbatches), micro))

        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep_if_bad = lambda new, old: jnp.where(finite, new, old)
        params = jax.tree.map(keep_if_bad, params, state.params)
        opt_state = jax.tree.map(keep_if_bad, opt_state, state.opt_state)
        metrics = {"loss": loss, **{f"loss/{k}": v for k, v in terms.items()},
                   "grad_norm": grad_norm, "skipped": 1.0 - finite.astype(jnp.float32),
                   **{f"grad_norm/{group}": optax.tree.norm(value) for group, value in grads.items()},
                   "learning_rate": schedule(state.step), "alpha": alpha}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def make_eval_step(spec: DistillSpec, student: nn.Module, teacher: nn.Module | None):
    """Returns `eval_step(params, teacher_params, batch) -> {name: (sum, count)}` for held-out metrics.

    The metrics are the span-corruption cross-entropy of the student (`eval/ground_truth`) and, when
    distilling, every distillation term (`eval/<term>`), without dropout and with `alpha = 1`.

    Args:
      spec: the distillation objective; `ground_truth` is added with weight 1.
      student, teacher: models of the `models/interface.py` seam (`teacher` None when not needed).

    Returns:
      `eval_step`; each value is (float32 scalar term * valid decoder positions, float32 scalar valid
      decoder positions), so sums over batches divided give the per-token mean.
    """
    eval_spec = dataclasses.replace(spec, weights=spec.weights + (("ground_truth", 1.0),))

    def eval_step(params, teacher_params, batch):
        denominator = denominators(batch)
        _, terms = forward_terms(eval_spec, student, teacher, params, teacher_params, batch, denominator, 1.0)
        weight = denominator["decoder"]
        return {f"eval/{k}": (v * weight, weight) for k, v in terms.items()}

    return eval_step
