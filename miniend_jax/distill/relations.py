"""MiniLMv2-style attention relations and their KL divergence.

For one attention module, the projected queries, keys or values `[batch, length, heads * d_kv]` are
re-split into R relation heads `[batch, R, length, d_r]` (`d_r = width / R`), so teacher and student
need not share head counts. A relation between two such tensors A, B is
`softmax(A B^T / sqrt(d_r) + mask)` over the last axis. Softmax and KL are float32. Source: MiniLMv2
(Wang et al. 2021, "MiniLMv2: Multi-Head Self-Attention Relation Distillation for Compressing
Pretrained Transformers"): its self-attention relations and their KL loss, applied here to every
attention kind of an encoder-decoder.

Losses are returned as *sums* over valid (batch, relation head, query row) triples, divided by R and
by the number of relations of the module; the caller divides by the number of valid query rows of the
whole batch. That keeps gradient accumulation over microbatches exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from miniend_jax.models.interface import AttentionTap

_MASK_VALUE = -1e9


def split_relation_heads(x: jax.Array, num_relation_heads: int) -> jax.Array:
    """`[batch, length, width]` -> `[batch, R, length, width / R]`, same dtype.

    Raises:
      ValueError: `width` is not divisible by `num_relation_heads`.
    """
    batch, length, width = x.shape
    if width % num_relation_heads:
        raise ValueError(f"width {width} is not divisible by {num_relation_heads} relation heads")
    return x.reshape(batch, length, num_relation_heads, width // num_relation_heads).transpose(0, 2, 1, 3)


def relation_log_probs(a: jax.Array, b: jax.Array, mask: jax.Array, num_relation_heads: int) -> jax.Array:
    """log softmax(A B^T / sqrt(d_r)) over keys; masked keys get (near) zero probability.

    a: `[batch, La, width]`, b: `[batch, Lb, width]`, mask: bool broadcastable to `[batch, R, La, Lb]`.
    Returns float32 `[batch, R, La, Lb]`.

    Raises:
      ValueError: a width is not divisible by `num_relation_heads`.
    """
    a = split_relation_heads(a, num_relation_heads)
    b = split_relation_heads(b, num_relation_heads)
    scores = jnp.einsum("brqd,brkd->brqk", a, b, preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(a.shape[-1]))
    return jax.nn.log_softmax(jnp.where(mask, scores, _MASK_VALUE), axis=-1)


def interpolate_target(teacher_logp: jax.Array, student_logp: jax.Array, alpha: jax.Array | float,
                       space: str = "probability") -> jax.Array:
    """log of the interpolated distillation target (our definition, after TAID).

    `probability`: `P = (1 - a) * stopgrad(P_student) + a * P_teacher` (METHOD.md's definition).
    `logit`: `P = softmax((1 - a) * stopgrad(log P_student) + a * log P_teacher)` (TAID's own form).
    `a = 1` returns the teacher exactly.

    Args:
      teacher_logp, student_logp: float32 log-probabilities of the same shape, normalised over the last axis.
      alpha: `a`, scalar in [0, 1].
      space: `probability` or `logit`.

    Returns:
      float32 log-probabilities of the inputs' shape.

    Raises:
      ValueError: an unknown `space`.
    """
    student_logp = jax.lax.stop_gradient(student_logp)
    alpha = jnp.asarray(alpha, jnp.float32)
    if space == "probability":
        mixed = jnp.logaddexp(jnp.log1p(-alpha) + student_logp, jnp.log(alpha) + teacher_logp)
        return jnp.where(alpha >= 1.0, teacher_logp, mixed)
    if space == "logit":
        return jax.nn.log_softmax((1.0 - alpha) * student_logp + alpha * teacher_logp, axis=-1)
    raise ValueError(f"unknown interpolation space {space!r}")


def kl_sum(target_logp: jax.Array, student_logp: jax.Array, key_mask: jax.Array,
           query_valid: jax.Array) -> jax.Array:
    """Sum over valid query rows of KL(target || student) along the last axis.

    target_logp, student_logp: `[batch, R, Lq, Lk]`; key_mask broadcastable to it; query_valid
    `[batch, Lq]` bool. Masked keys contribute nothing.

    Returns:
      float32 scalar (nats, summed over batch, relation heads and valid rows).
    """
    p = jnp.exp(target_logp)
    per_key = jnp.where(key_mask, p * (target_logp - student_logp), 0.0)
    per_row = per_key.sum(-1)  # [batch, R, Lq]
    return jnp.sum(jnp.where(query_valid[:, None, :], per_row, 0.0))


def relation_kl_sum(teacher: tuple[jax.Array, jax.Array], student: tuple[jax.Array, jax.Array],
                    mask: jax.Array, query_valid: jax.Array, num_relation_heads: int,
                    alpha: jax.Array | float = 1.0, interpolation_space: str = "probability") -> jax.Array:
    """KL(teacher relation || student relation) summed over valid rows and averaged over relation heads.

    teacher, student: the (A, B) pair of each model, `[batch, La, width]` and `[batch, Lb, width]`;
    widths may differ between the models. mask: bool broadcastable to `[batch, R, La, Lb]`;
    query_valid: bool `[batch, La]`. Returns a float32 scalar.
    """
    teacher_logp = relation_log_probs(*teacher, mask, num_relation_heads)
    student_logp = relation_log_probs(*student, mask, num_relation_heads)
    target = interpolate_target(jax.lax.stop_gradient(teacher_logp), student_logp, alpha, interpolation_space)
    return kl_sum(target, student_logp, mask, query_valid) / num_relation_heads


def self_attention_relation_sum(teacher: AttentionTap, student: AttentionTap, mask: jax.Array,
                                query_valid: jax.Array, num_relation_heads: int, alpha=1.0,
                                interpolation_space: str = "probability") -> jax.Array:
    """Mean of the QQ, KK and VV relation losses of a self-attention module (summed over rows).

    MiniLMv2's self-attention relation loss (Wang et al. 2021).

    Args:
      teacher, student: the module's taps, each `[batch, L, width]` (widths may differ).
      mask: bool, broadcastable to `[batch, R, L, L]` (e.g. `encoder_attention_mask`).
      query_valid: bool `[batch, L]`, the rows that count.
      num_relation_heads: R.
      alpha, interpolation_space: see `interpolate_target`.

    Returns:
      float32 scalar: sum over valid rows, divided by R and by 3.
    """
    total = 0.0
    for t, s in ((teacher.q, student.q), (teacher.k, student.k), (teacher.v, student.v)):
        total = total + relation_kl_sum((t, t), (s, s), mask, query_valid, num_relation_heads, alpha,
                                        interpolation_space)
    return total / 3.0


def cross_attention_relation_sums(teacher: AttentionTap, student: AttentionTap, cross_mask: jax.Array,
                                  decoder_valid: jax.Array, encoder_mask: jax.Array,
                                  encoder_valid: jax.Array, num_relation_heads: int, alpha=1.0,
                                  interpolation_space: str = "probability") -> tuple[jax.Array, jax.Array]:
    """The cross-attention module's relations (our definition; the paper does not give one).

    The Q_dec K_enc^T distribution (|Z| x |X|, rows = decoder positions) and the KK and VV relations
    over the encoder-side keys and values (|X| x |X|, rows = encoder positions), which carry the
    explicit encoder signal. Returns (sum over decoder rows of the QK term,
    sum over encoder rows of the KK and VV terms), each already divided by 3 (the module averages its
    three relations) so that `qk / n_dec + kv / n_enc` is the module loss.

    Args:
      teacher, student: the cross-attention taps: `q` `[batch, dec_len, width]`, `k`, `v`
        `[batch, enc_len, width]`.
      cross_mask: bool, broadcastable to `[batch, R, dec_len, enc_len]` (`cross_attention_mask`).
      decoder_valid: bool `[batch, dec_len]`.
      encoder_mask: bool, broadcastable to `[batch, R, enc_len, enc_len]` (`encoder_attention_mask`).
      encoder_valid: bool `[batch, enc_len]`.
      num_relation_heads: R.
      alpha, interpolation_space: see `interpolate_target`.

    Returns:
      (float32 scalar, float32 scalar).
    """
    qk = relation_kl_sum((teacher.q, teacher.k), (student.q, student.k), cross_mask, decoder_valid,
                         num_relation_heads, alpha, interpolation_space)
    kv = 0.0
    for t, s in ((teacher.k, student.k), (teacher.v, student.v)):
        kv = kv + relation_kl_sum((t, t), (s, s), encoder_mask, encoder_valid, num_relation_heads, alpha,
                                  interpolation_space)
    return qk / 3.0, kv / 3.0
