"""T5 span corruption (Raffel et al. 2020, section 3.1.4), written for seqio pipelines.

The algorithm, as T5 defines it:
1. Concatenate tokenized documents into one stream and cut it into chunks of `tokens_length` tokens,
   the length whose corrupted inputs fill `inputs_length` exactly (`lengths_for_inputs`).
2. In each chunk mark `round(length * noise_density)` tokens as noise, in
   `round(num_noise / mean_noise_span_length)` spans. Noise and non-noise span lengths are random
   segmentations of their token counts; spans alternate, starting with non-noise.
3. Inputs: the chunk with each noise span replaced by one sentinel; targets: each non-noise span
   replaced by a sentinel, i.e. sentinel, noise span, sentinel, noise span, ... Sentinels count down
   from the top of the vocabulary: the first is `vocab_size - 1` (`<extra_id_0>`). EOS is appended later.

Randomness is stateless (seeds from `seqio.map_over_dataset`), so a pipeline is reproducible from its
seed and its tf.data iterator can be checkpointed.
"""

from __future__ import annotations

from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from tasks.lengths import lengths_for_inputs  # noqa: F401 - part of this module's interface


def _random_segmentation(num_items: tf.Tensor, num_segments: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Lengths of a uniformly random split of `num_items` into `num_segments` non-empty parts."""
    starts_new = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
    starts_new = tf.pad(seqio.utils.stateless_shuffle(starts_new, seed), [[1, 0]])
    segment = tf.cumsum(starts_new)
    return tf.math.segment_sum(tf.ones_like(segment), segment)


def random_spans_noise_mask(length: tf.Tensor, noise_density: float, seeds: tf.Tensor,
                            mean_noise_span_length: float = 3.0) -> tf.Tensor:
    """Boolean `[length]` noise mask with T5's span statistics. `seeds`: int `[2, 2]`."""
    original_length = length
    length = tf.maximum(length, 2)
    num_noise = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, length - 1)
    num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length), tf.int32)
    num_spans = tf.maximum(num_spans, 1)
    noise_lengths = _random_segmentation(num_noise, num_spans, seeds[0])
    keep_lengths = _random_segmentation(length - num_noise, num_spans, seeds[1])
    interleaved = tf.reshape(tf.stack([keep_lengths, noise_lengths], axis=1), [num_spans * 2])
    span_starts = tf.cumsum(interleaved)[:-1]
    start_indicator = tf.math.unsorted_segment_sum(tf.ones_like(span_starts), span_starts, length)
    is_noise = tf.equal(tf.cumsum(start_indicator) % 2, 1)
    return is_noise[:original_length]


def replace_spans_with_sentinels(tokens: tf.Tensor, span_mask: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """Replaces each run of `span_mask` tokens by one sentinel (vocab_size - 1, - 2, ... in order)."""
    previous = tf.pad(span_mask[:-1], [[1, 0]])
    first = tf.logical_and(span_mask, tf.logical_not(previous))
    rest = tf.logical_and(span_mask, previous)
    sentinels = vocab_size - tf.cumsum(tf.cast(first, tokens.dtype))
    return tf.boolean_mask(tf.where(first, sentinels, tokens), tf.logical_not(rest))


def concat_and_split(dataset: tf.data.Dataset, tokens_length: int, batch_size: int = 128) -> tf.data.Dataset:
    """Concatenates the `targets` of `batch_size` documents at a time and cuts them into chunks of at
    most `tokens_length` tokens (T5's `reduce_concat_tokens` + `split_tokens`)."""
    dataset = dataset.map(lambda x: {"targets": x["targets"]}, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.padded_batch(batch_size, padded_shapes={"targets": [-1]})

    def concat(batch):
        tokens = tf.reshape(batch["targets"], [-1])
        return tf.boolean_mask(tokens, tokens > 0)

    def split(tokens):
        num_chunks = (tf.size(tokens) + tokens_length - 1) // tokens_length
        padded = tf.pad(tokens, [[0, num_chunks * tokens_length - tf.size(tokens)]])
        chunks = tf.reshape(padded, [num_chunks, tokens_length])
        return tf.data.Dataset.from_tensor_slices(chunks).map(lambda c: {"targets": tf.boolean_mask(c, c > 0)})

    return dataset.map(concat, num_parallel_calls=tf.data.AUTOTUNE).flat_map(split)


def span_corruption(dataset: tf.data.Dataset, sequence_length, output_features, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0) -> tf.data.Dataset:
    """seqio preprocessor: tokenized documents in `targets` -> span-corrupted `inputs` / `targets`.

    Chunk length follows `sequence_length["inputs"]`; EOS is left to `append_eos_after_trim`.
    """
    tokens_length, _ = lengths_for_inputs(sequence_length["inputs"], noise_density, mean_noise_span_length)
    vocab_size = output_features["targets"].vocabulary.vocab_size
    dataset = concat_and_split(dataset, tokens_length)

    @seqio.map_over_dataset(num_seeds=2)
    def corrupt(example, seeds):
        tokens = example["targets"]
        noise = random_spans_noise_mask(tf.size(tokens), noise_density, seeds, mean_noise_span_length)
        return {"inputs": replace_spans_with_sentinels(tokens, noise, vocab_size),
                "targets": replace_spans_with_sentinels(tokens, tf.logical_not(noise), vocab_size)}

    return corrupt(dataset)
