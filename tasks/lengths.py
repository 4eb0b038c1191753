"""Feature lengths of span corruption: plain arithmetic, importable without TensorFlow (for planning)."""

from __future__ import annotations

import numpy as np


def lengths_for_inputs(inputs_length: int, noise_density: float = 0.15,
                       mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(tokens_length, targets_length): the longest raw chunk whose corrupted inputs (with one sentinel
    per span and EOS) fit `inputs_length`, and the targets length it gives.

    The span counts are those of `tasks.span_corruption.random_spans_noise_mask`, clamps included: at
    least one noise token, at least one kept token and at least one span (T5's `random_spans_helper`
    omits the span clamp, so for short inputs it gives lengths the mask then overflows).
    """
    def corrupted_lengths(tokens_length):
        # float32 and round-half-to-even, as the mask computes them in TensorFlow.
        length = max(tokens_length, 2)
        num_noise = int(np.round(np.float32(length) * np.float32(noise_density)))
        num_noise = min(max(num_noise, 1), length - 1)
        num_spans = max(int(np.round(np.float32(num_noise) / np.float32(mean_noise_span_length))), 1)
        return (tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1)

    tokens_length = inputs_length - 1
    while corrupted_lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = corrupted_lengths(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:  # T5's tie-break for 50% noise
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def task_feature_lengths(inputs_length: int, targets_length: int | None = None, noise_density: float = 0.15,
                         mean_noise_span_length: float = 3.0) -> dict[str, int]:
    """Inputs/targets lengths; the targets length defaults to what span corruption produces."""
    if targets_length is None or targets_length <= 0:
        _, targets_length = lengths_for_inputs(inputs_length, noise_density, mean_noise_span_length)
    return {"inputs": inputs_length, "targets": targets_length}
