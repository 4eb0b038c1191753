"""The loss terms of distillation, one row of `TERMS` each, with the masks and normalisers they share.

A term is a function of a `Context` (both models' outputs, the batch, its masks and the whole batch's
normalisers) returning its normalised float32 value, and a row saying which attention taps it reads,
whether it reads the teacher, and its default weight. `DistillSpec` derives the term names, the taps
each model returns and the default weights from this table, and `objectives.compute_terms` is a loop
over it: a new term is one row and its function (and its default in `configs/base.py`'s
`distill.weights`, which a test ties to this table).

Normalisation: each term is a sum over valid rows divided by the number of valid rows *of the whole
batch* (`denominators`), so summing a term over microbatches gives exactly the full-batch value.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from miniend_jax.distill import relations
from miniend_jax.models.interface import (Seq2SeqOutput, cross_attention_mask, decoder_attention_mask,
                                          encoder_attention_mask)


# ---------------------------------------------------------------------------------------------
# Masks and normalisers from a batch (seqio EncDecFeatureConverter features)
# ---------------------------------------------------------------------------------------------
def valid_rows(batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(encoder positions that are not padding, decoder target positions that count).

    Args:
      batch: seqio features; `encoder_input_tokens` int `[batch, enc_len]` and either
        `decoder_loss_weights` or `decoder_target_tokens` int `[batch, dec_len]` (0 = does not count).

    Returns:
      (bool `[batch, enc_len]`, bool `[batch, dec_len]`).
    """
    encoder_valid = batch["encoder_input_tokens"] > 0
    if "decoder_loss_weights" in batch:
        decoder_valid = batch["decoder_loss_weights"] > 0
    else:
        decoder_valid = batch["decoder_target_tokens"] > 0
    return encoder_valid, decoder_valid


def denominators(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Valid encoder and decoder rows of `batch` (at least 1), the normalisers of every term.

    Returns:
      {"encoder": float32 scalar, "decoder": float32 scalar}: counts of the `valid_rows` positions.
    """
    encoder_valid, decoder_valid = valid_rows(batch)
    return {"encoder": jnp.maximum(encoder_valid.sum(), 1).astype(jnp.float32),
            "decoder": jnp.maximum(decoder_valid.sum(), 1).astype(jnp.float32)}


# ---------------------------------------------------------------------------------------------
# What a term reads
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Context:
    """Everything a term function reads.

    Attributes:
      spec: the `DistillSpec` (tapped layers, relation heads, temperature, interpolation space).
      teacher: the teacher's output with its taps; None when no active term reads the teacher.
      student: the student's output with its taps.
      batch: seqio features: `encoder_input_tokens`, `decoder_input_tokens`, `decoder_target_tokens`,
        optionally `decoder_loss_weights` and `*_segment_ids`.
      denominator: `denominators` of the *whole* batch (equal to this batch's without microbatching).
      alpha: the interpolation weight `a_t` (1 = plain distillation).
    """

    spec: Any
    teacher: Seq2SeqOutput | None
    student: Seq2SeqOutput
    batch: Mapping[str, jax.Array]
    denominator: Mapping[str, jax.Array]
    alpha: jax.Array | float = 1.0

    @property
    def valid(self) -> tuple[jax.Array, jax.Array]:
        """`valid_rows` of the batch: (encoder, decoder) bool masks."""
        return valid_rows(self.batch)

    @property
    def masks(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The attention masks (encoder self, decoder self, cross) of the batch, packing respected."""
        b = self.batch
        enc_seg, dec_seg = b.get("encoder_segment_ids"), b.get("decoder_segment_ids")
        return (encoder_attention_mask(b["encoder_input_tokens"], enc_seg),
                decoder_attention_mask(b["decoder_input_tokens"], b["decoder_target_tokens"], dec_seg),
                cross_attention_mask(b["encoder_input_tokens"], dec_seg, enc_seg))

    def taps(self, kind: str):
        """(teacher's, student's) Q/K/V tap of `kind` at the spec's tapped layer of its stack."""
        stack = "encoder" if kind == "encoder_self" else "decoder"
        return tuple(getattr(self, role).taps[kind][getattr(self.spec, f"{role}_{stack}_layer")]
                     for role in ("teacher", "student"))

    @property
    def relation_settings(self) -> dict:
        s = self.spec
        return dict(num_relation_heads=s.relation_heads, alpha=self.alpha, interpolation_space=s.interpolation_space)


# ---------------------------------------------------------------------------------------------
# The terms
# ---------------------------------------------------------------------------------------------
def logit_kd_sum(teacher_logits, student_logits, decoder_valid, temperature=1.0, alpha=1.0,
                 interpolation_space="probability") -> jax.Array:
    """Sum over valid targets of T^2 * KL(target || softmax(s/T)), target = softmax(t/T) when alpha = 1.

    Knowledge distillation of Hinton et al. 2015 ("Distilling the Knowledge in a Neural Network"), with
    the interpolated target of `relations.interpolate_target` for alpha < 1.

    Args:
      teacher_logits, student_logits: `[batch, dec_len, vocab]`, any float dtype (computed in float32).
      decoder_valid: bool `[batch, dec_len]`, the positions that count.
      temperature: T > 0.
      alpha: the interpolation weight `a_t` (1 = the teacher's distribution).
      interpolation_space: `probability` or `logit`.

    Returns:
      float32 scalar, a sum in nats (not a mean).
    """
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    target = relations.interpolate_target(jax.lax.stop_gradient(t), s, alpha, interpolation_space)
    per_token = jnp.sum(jnp.exp(target) * (target - s), axis=-1)
    return temperature ** 2 * jnp.sum(jnp.where(decoder_valid, per_token, 0.0))


def cross_entropy_sum(logits, targets, decoder_valid) -> jax.Array:
    """Sum over valid targets of -log p(target).

    Args:
      logits: `[batch, dec_len, vocab]`, any float dtype (computed in float32).
      targets: int `[batch, dec_len]`.
      decoder_valid: bool `[batch, dec_len]`.

    Returns:
      float32 scalar, a sum in nats (not a mean).
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(decoder_valid, nll, 0.0))


def _ground_truth(c: Context) -> jax.Array:
    """Span-corruption cross-entropy of the student, per valid target."""
    total = cross_entropy_sum(c.student.logits, c.batch["decoder_target_tokens"], c.valid[1])
    return total / c.denominator["decoder"]


def _logit(c: Context) -> jax.Array:
    """KD on the next-token distributions (`logit_kd_sum`), per valid target."""
    total = logit_kd_sum(c.teacher.logits, c.student.logits, c.valid[1], c.spec.temperature, c.alpha,
                         c.spec.interpolation_space)
    return total / c.denominator["decoder"]


def _encoder_self(c: Context) -> jax.Array:
    """Encoder self-attention relations (Q-Q, K-K, V-V) of the tapped layers, per valid encoder row."""
    encoder_valid, _ = c.valid
    total = relations.self_attention_relation_sum(*c.taps("encoder_self"), c.masks[0], encoder_valid,
                                                  **c.relation_settings)
    return total / c.denominator["encoder"]


def _decoder_self(c: Context) -> jax.Array:
    """Decoder self-attention relations of the tapped layers, per valid decoder row."""
    _, decoder_valid = c.valid
    total = relations.self_attention_relation_sum(*c.taps("decoder_self"), c.masks[1], decoder_valid,
                                                  **c.relation_settings)
    return total / c.denominator["decoder"]


def _cross(c: Context) -> jax.Array:
    """Cross-attention relations: Q-Q over decoder rows plus K-K and V-V over encoder rows."""
    encoder_valid, decoder_valid = c.valid
    enc_mask, _, cross_mask = c.masks
    qk, kv = relations.cross_attention_relation_sums(*c.taps("cross"), cross_mask, decoder_valid, enc_mask,
                                                     encoder_valid, **c.relation_settings)
    return qk / c.denominator["decoder"] + kv / c.denominator["encoder"]


@dataclasses.dataclass(frozen=True)
class Term:
    """One loss term: `fn(Context) -> float32 scalar` (normalised, unweighted); `taps`: the attention tap
    kinds (`models.interface.Taps` fields) it reads at the tapped layers; `teacher`: whether it reads
    the teacher; `weight`: its default weight in the total loss."""

    fn: Callable[[Context], jax.Array]
    taps: tuple[str, ...] = ()
    teacher: bool = True
    weight: float = 1.0


# METHOD.md's terms. The order is the order of the logged `loss/<term>` values.
TERMS: dict[str, Term] = {
    "logit": Term(_logit),
    "encoder_self": Term(_encoder_self, taps=("encoder_self",)),
    "decoder_self": Term(_decoder_self, taps=("decoder_self",)),
    "cross": Term(_cross, taps=("cross",)),
    "ground_truth": Term(_ground_truth, teacher=False, weight=0.0),
}
