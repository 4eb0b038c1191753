"""Span corruption against T5's definition: lengths, noise statistics, output format."""

import numpy as np
import pytest
import tensorflow as tf

from tasks.span_corruption import lengths_for_inputs, random_spans_noise_mask, replace_spans_with_sentinels

VOCAB = 32100


def test_lengths_match_t5():
    # T5's published setting: inputs 512 -> 568 raw tokens, targets 114.
    assert lengths_for_inputs(512) == (568, 114)
    for inputs_length in (64, 128, 256, 1024):
        tokens, targets = lengths_for_inputs(inputs_length)
        noise = round(tokens * 0.15)
        spans = round(noise / 3)
        assert tokens - noise + spans + 1 == inputs_length  # inputs exactly filled
        assert noise + spans + 1 == targets


def _runs(mask):
    """Lengths of the runs of True in a boolean vector."""
    runs, current = [], 0
    for value in mask:
        if value:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs + ([current] if current else [])


def _mask(length, seed):
    seeds = tf.constant([[seed, 1], [seed, 2]], tf.int32)
    return random_spans_noise_mask(tf.constant(length), 0.15, seeds, 3.0).numpy()


def test_noise_mask_statistics():
    length = 568
    all_runs = []
    for seed in range(200):
        mask = _mask(length, seed)
        runs = _runs(mask)
        assert mask.sum() == round(length * 0.15) == 85        # exact noise count
        assert len(runs) == round(85 / 3) == 28                # exact span count
        assert not mask[0]                                     # spans start with non-noise
        all_runs += runs
    assert np.mean(all_runs) == pytest.approx(85 / 28)
    # Span lengths are a uniform random segmentation: long spans occur, lengths vary.
    assert max(all_runs) >= 10 and np.std(all_runs) > 1.5
    # Positions of noise are spread over the whole chunk.
    hits = np.mean([_mask(length, s) for s in range(200)], axis=0)
    assert hits[: length // 2].mean() == pytest.approx(hits[length // 2:].mean(), rel=0.25)


def test_noise_mask_is_seeded():
    assert np.array_equal(_mask(100, 7), _mask(100, 7))
    assert not np.array_equal(_mask(100, 7), _mask(100, 8))
    for length in (1, 2, 3):  # degenerate lengths still work
        assert _mask(length, 0).shape == (length,)


def test_inputs_and_targets_format_reconstructs_the_text():
    length, _ = lengths_for_inputs(128)
    tokens = np.arange(100, 100 + length, dtype=np.int32)
    mask = _mask(length, 3)
    inputs = replace_spans_with_sentinels(tf.constant(tokens), tf.constant(mask), VOCAB).numpy()
    targets = replace_spans_with_sentinels(tf.constant(tokens), tf.constant(~mask), VOCAB).numpy()
    spans = len(_runs(mask))
    sentinels = list(range(VOCAB - 1, VOCAB - 1 - spans, -1))  # <extra_id_0>, <extra_id_1>, ...
    assert [t for t in inputs if t >= 32000] == sentinels
    assert [t for t in targets if t >= 32000] == sentinels
    assert targets[0] == VOCAB - 1 and inputs[0] == tokens[0]
    assert len(inputs) + 1 == 128  # with EOS: exactly the inputs length this chunk is cut for
    # Put every target span back in place of its sentinel: the original chunk.
    fill, current = {}, None
    for t in targets:
        if t >= 32000:
            current = t
            fill[current] = []
        else:
            fill[current].append(t)
    rebuilt = [x for t in inputs for x in (fill[t] if t >= 32000 else [t])]
    np.testing.assert_array_equal(rebuilt, tokens)


def _corrupted_lengths(tokens_length, noise_density, mean_span):
    """(inputs, targets) lengths with EOS that the mask and sentinel replacement really produce."""
    seeds = tf.constant([[5, 1], [5, 2]], tf.int32)
    tokens = tf.range(100, 100 + tokens_length, dtype=tf.int32)
    mask = random_spans_noise_mask(tf.constant(tokens_length), noise_density, seeds, mean_span)
    inputs = replace_spans_with_sentinels(tokens, mask, VOCAB)
    targets = replace_spans_with_sentinels(tokens, tf.logical_not(mask), VOCAB)
    return int(tf.size(inputs)) + 1, int(tf.size(targets)) + 1


@pytest.mark.parametrize("noise_density,mean_span,longest", [(0.15, 3.0, 600), (0.5, 3.0, 80), (0.3, 8.0, 80)])
def test_every_accepted_inputs_length_gives_examples_that_fit(noise_density, mean_span, longest):
    """Every inputs length config validation accepts (>= 8): the chunk `lengths_for_inputs` cuts
    corrupts to inputs and targets within the lengths it states, and one token more would not fit.
    The lengths do not depend on the seed (only where the spans fall does).
    (Before the mask's clamps were mirrored, lengths 8 and 9 gave 9 inputs and 3 targets for 8 and 2.)"""
    for inputs_length in range(8, longest):
        tokens_length, targets_length = lengths_for_inputs(inputs_length, noise_density, mean_span)
        n_in, n_tgt = _corrupted_lengths(tokens_length, noise_density, mean_span)
        assert n_in <= inputs_length and n_tgt <= targets_length, (inputs_length, tokens_length, n_in, n_tgt)
        more_in, more_tgt = _corrupted_lengths(tokens_length + 1, noise_density, mean_span)
        assert more_in > inputs_length or more_tgt > targets_length, inputs_length
