"""The distillation objectives of MiniEnD and its baselines, as sums of loss terms.

Terms (METHOD.md): `logit` (KD on next-token distributions), `decoder_self`, `encoder_self`, `cross`
(attention relations of the tapped layers), `ground_truth` (span-corruption cross-entropy).

| objective              | terms                                  |
|------------------------|----------------------------------------|
| pretrain               | ground_truth (the from-scratch baseline) |
| mlmkd                  | logit                                  |
| minilm                 | encoder_self                           |
| mlmkd_minilm           | logit + encoder_self                   |
| l_imp                  | logit + decoder_self                   |
| miniend_d              | logit + decoder_self + cross           |
| miniend_d_no_logits    | decoder_self + cross                   |
| miniend_e              | logit + decoder_self + encoder_self    |
| miniend_e_no_logits    | decoder_self + encoder_self            |

MiniLM on an encoder-decoder is taken as the encoder's last-layer self-attention relations (our choice:
the paper's MiniLM is the encoder-only recipe; with the decoder's relations too it would equal
MiniEnD-E without logits). Every distillation objective may add `ground_truth` with its own weight.

The terms themselves, their taps and default weights are the table `distill/terms.py:TERMS`; each is
normalised by the whole batch's valid rows (`terms.denominators`), so microbatches sum to the full batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp

from miniend_jax.distill import terms as term_table
from miniend_jax.errors import ConfigError, check
from miniend_jax.models.interface import Seq2SeqOutput, Taps

OBJECTIVES: dict[str, tuple[str, ...]] = {
    "pretrain": ("ground_truth",),
    "mlmkd": ("logit",),
    "minilm": ("encoder_self",),
    "mlmkd_minilm": ("logit", "encoder_self"),
    "l_imp": ("logit", "decoder_self"),
    "miniend_d": ("logit", "decoder_self", "cross"),
    "miniend_d_no_logits": ("decoder_self", "cross"),
    "miniend_e": ("logit", "decoder_self", "encoder_self"),
    "miniend_e_no_logits": ("decoder_self", "encoder_self"),
}
TERMS = tuple(term_table.TERMS)
INTERPOLATION_SCHEDULES = ("constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class Interpolation:
    """Interpolated distillation (`distill.interpolation`): the target `a_t` of the way from the student
    to the teacher (`interpolation_alpha`), and the space it interpolates in.

    Attributes:
      start: `a_0`, in [0, 1].
      steps: length of the ramp to 1 (unused by `constant`).
      schedule: `constant` (plain MiniEnD, `a_t = 1`), `linear` or `cosine`.
      space: `probability` or `logit`, see `relations.interpolate_target`.

    Raises:
      ConfigError: on construction, as `check_interpolation`, or an unknown `space`.
    """

    start: float = 1.0
    steps: int = 0
    schedule: str = "constant"
    space: str = "probability"

    def __post_init__(self):
        check_interpolation(self.start, self.steps, self.schedule)
        if self.space not in ("probability", "logit"):
            raise ConfigError(f"distill.interpolation.space={self.space!r}: "
                              "use 'probability' (METHOD.md) or 'logit' (TAID).")

    def alpha(self, step) -> jax.Array:
        """float32 `a_t` at optimizer step `step` (may be traced)."""
        return interpolation_alpha(step, self.start, self.steps, self.schedule)


@dataclasses.dataclass(frozen=True)
class DistillSpec:
    """What to distil and how. Layers are per stack (`encoder`, `decoder`); negative = from the end.

    Attributes:
      objective: a key of `OBJECTIVES`.
      relation_heads: R, the number of relation heads the attention widths are re-split into
        (MiniLMv2, Wang et al. 2021); must divide both models' `num_heads * d_kv`.
      teacher_encoder_layer, teacher_decoder_layer, student_encoder_layer, student_decoder_layer: the
        tapped layer of each stack.
      temperature: T of the logit KD term (Hinton et al. 2015), scaled back by T^2.
      weights: (term, weight) overrides of the terms' default weights (`terms.TERMS`: 1, `ground_truth` 0).
      interpolation: the `Interpolation` of the targets (default: none, plain distillation).

    Raises:
      ConfigError: on construction, for an unknown objective or term, or a non-positive
        `relation_heads` or `temperature`.
    """

    objective: str = "miniend_e"
    relation_heads: int = 32
    teacher_encoder_layer: int = -1
    teacher_decoder_layer: int = -1
    student_encoder_layer: int = -1
    student_decoder_layer: int = -1
    temperature: float = 1.0
    weights: tuple[tuple[str, float], ...] = ()   # overrides of the default weight 1 (ground_truth: 0)
    interpolation: Interpolation = dataclasses.field(default_factory=lambda: Interpolation())

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"distill.objective={self.objective!r} is unknown; choose one of "
                              f"{', '.join(OBJECTIVES)}.")
        unknown = [name for name, _ in self.weights if name not in TERMS]
        if unknown:
            raise ConfigError(f"distill.weights has unknown term(s) {unknown}; terms are {', '.join(TERMS)}.")
        if self.relation_heads <= 0:
            raise ConfigError(f"distill.relation_heads={self.relation_heads}: must be positive (default 32).")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature={self.temperature}: must be positive (default 1).")

    @property
    def interpolation_space(self) -> str:
        """The space the targets are interpolated in (`Interpolation.space`)."""
        return self.interpolation.space

    @property
    def terms(self) -> tuple[str, ...]:
        """Active terms: the objective's, plus ground_truth where it has a positive weight."""
        terms = OBJECTIVES[self.objective]
        if "ground_truth" not in terms and self.weight("ground_truth") > 0:
            terms = terms + ("ground_truth",)
        return terms

    @property
    def needs_teacher(self) -> bool:
        """Whether any active term reads the teacher (every term but `ground_truth`)."""
        return any(term_table.TERMS[t].teacher for t in self.terms)

    def weight(self, term: str) -> float:
        """The weight of `term` in `total_loss` (for `pretrain`: 1 for ground_truth, 0 otherwise)."""
        if self.objective == "pretrain":  # the ground-truth loss *is* the objective: weight 1, always
            return 1.0 if term == "ground_truth" else 0.0
        return float(dict(self.weights).get(term, term_table.TERMS[term].weight))

    def taps(self, role: str) -> Taps:
        """The layers whose Q/K/V the `role` model must return for the active terms.

        Args:
          role: `"teacher"` or `"student"`.
        """
        kinds = {kind for t in self.terms for kind in term_table.TERMS[t].taps}
        layer = {stack: getattr(self, f"{role}_{stack}_layer") for stack in ("encoder", "decoder")}
        return Taps(**{kind: (layer["encoder" if kind == "encoder_self" else "decoder"],) if kind in kinds else ()
                       for kind in ("encoder_self", "decoder_self", "cross")})

    def check_models(self, teacher_config, student_config) -> None:
        """Cross-field checks: relation heads divide widths, tapped layers exist, vocabularies agree.

        Args:
          teacher_config, student_config: the models' configs (`T5Config` or any with `inner_dim`,
            `num_encoder_layers`, `num_decoder_layers`, `vocab_size`); the teacher's is read only when
            `needs_teacher`.

        Raises:
          ConfigError: naming the failed check and a fix.
        """
        models = [("student", student_config)] + ([("teacher", teacher_config)] if self.needs_teacher else [])
        relation_terms = [t for t in self.terms if term_table.TERMS[t].taps]
        common = math.gcd(*[config.inner_dim for _, config in models])
        suggestion = max(d for d in range(1, common + 1) if common % d == 0 and d <= self.relation_heads)
        for role, config in models:
            if relation_terms and config.inner_dim % self.relation_heads:
                raise ConfigError(
                    f"distill.relation_heads={self.relation_heads} does not divide the {role}'s attention "
                    f"width num_heads*d_kv={config.inner_dim}; choose a divisor of both models' widths "
                    f"(e.g. {suggestion}).")
            for stack, depth in (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers)):
                layer = getattr(self, f"{role}_{stack}_layer")
                if not -depth <= layer < depth:
                    raise ConfigError(f"distill.{role}_layers.{stack}={layer} is outside the {role}'s "
                                      f"{depth} {stack} layers; use an index in [{-depth}, {depth}).")
        if self.needs_teacher and teacher_config.vocab_size != student_config.vocab_size:
            raise ConfigError(
                f"teacher vocab_size={teacher_config.vocab_size} != student vocab_size="
                f"{student_config.vocab_size}; distillation needs one vocabulary. Set student overrides "
                "vocab_size to the teacher's.")


def _check_schedule(schedule: str) -> None:
    check(schedule in INTERPOLATION_SCHEDULES, "distill.interpolation.schedule", schedule,
          f"use one of {', '.join(INTERPOLATION_SCHEDULES)}.")


def check_interpolation(start: float, steps: int, schedule: str) -> None:
    """The `distill.interpolation` settings of `interpolation_alpha`, checked before training.

    Raises:
      ConfigError: an unknown schedule, `start` outside [0, 1], or a ramp of no steps.
    """
    _check_schedule(schedule)
    check(0.0 <= start <= 1.0, "distill.interpolation.start", start, "use a value in [0, 1].")
    if schedule != "constant":
        check(steps > 0, "distill.interpolation.steps", steps, "use a positive number of steps for a_t to reach 1.")


def interpolation_alpha(step: jax.Array, start: float, steps: int, schedule: str) -> jax.Array:
    """`a_t` rising from `start` to 1 over `steps` (linear or cosine); `constant` means plain MiniEnD.

    The ramp of the interpolated target (after TAID, Shing et al. 2025; see `relations.interpolate_target`).

    Args:
      step: int scalar, the optimizer step (may be traced).
      start: `a_0`, in [0, 1].
      steps: length of the ramp in steps; `a_t = 1` from then on (and always when `steps <= 0`).
      schedule: `constant`, `linear` or `cosine`.

    Returns:
      float32 scalar in [start, 1].

    Raises:
      ConfigError: an unknown schedule.
    """
    _check_schedule(schedule)
    if schedule == "constant" or steps <= 0:
        return jnp.float32(1.0)
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
    ramp = progress if schedule == "linear" else 0.5 * (1.0 - jnp.cos(jnp.pi * progress))  # cosine
    return jnp.float32(start) + (1.0 - jnp.float32(start)) * ramp


def compute_terms(spec: DistillSpec, teacher: Seq2SeqOutput | None, student: Seq2SeqOutput,
                  batch: Mapping[str, jax.Array], denominator: Mapping[str, jax.Array],
                  alpha: jax.Array | float = 1.0) -> dict[str, jax.Array]:
    """Every active term of `spec` (unweighted), normalised by `denominator` (see `terms.denominators`).

    Args:
      spec: what to compute.
      teacher: the teacher's output with the taps of `spec.taps("teacher")`; None when not
        `spec.needs_teacher`.
      student: the student's output with the taps of `spec.taps("student")`.
      batch: seqio features: `encoder_input_tokens`, `decoder_input_tokens`, `decoder_target_tokens`,
        optionally `decoder_loss_weights` and `*_segment_ids`.
      denominator: `terms.denominators` of the *whole* batch (equal to this batch's without microbatching).
      alpha: the interpolation weight `a_t` (1 = plain distillation).

    Returns:
      {term: float32 scalar} for each of `spec.terms`.
    """
    context = term_table.Context(spec, teacher, student, batch, denominator, alpha)
    return {term: term_table.TERMS[term].fn(context) for term in spec.terms}


def total_loss(spec: DistillSpec, terms: Mapping[str, jax.Array]) -> jax.Array:
    """Weighted sum of the terms (the paper sums them unweighted: every default weight is 1).

    Returns:
      float32 scalar, `sum(spec.weight(term) * value)`.
    """
    return sum(spec.weight(name) * value for name, value in terms.items())
