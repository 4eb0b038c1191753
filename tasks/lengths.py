"""Feature lengths of span corruption: plain arithmetic, importable without TensorFlow (for planning)."""

from __future__ import annotations


def lengths_for_inputs(inputs_length: int, noise_density: float = 0.15,
                       mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(tokens_length, targets_length): the raw chunk length whose corrupted inputs (with one sentinel
    per span and EOS) are exactly `inputs_length` long, and the matching targets length."""
    def corrupted_lengths(tokens_length):
        num_noise = int(round(tokens_length * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
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
