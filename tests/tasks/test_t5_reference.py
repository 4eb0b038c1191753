"""The `t5` package (0.9.4, installed by `make test` without its dependencies: see the Makefile) as the
reference for what the project re-implements: span corruption's lengths, chunking and corruption (given
the same per-chunk seeds, token-identical), T5's GLUE text format on every task, and the GLUE metrics."""

import functools
import gzip

import numpy as np
import pytest
import seqio
import tensorflow as tf

import t5.data.glue_utils as t5_glue_utils
import t5.data.preprocessors as t5_preprocessors
import t5.evaluation.metrics as t5_metrics

from miniend_jax.evaluation import metrics
from tasks import glue, span_corruption
from tests.conftest import SHARED_DATA, SPIECE


@pytest.mark.parametrize("inputs_length", [32, 64, 128, 512, 568])
@pytest.mark.parametrize("noise_density,mean_span", [(0.15, 3.0), (0.3, 8.0)])
def test_span_lengths_equal_t5(inputs_length, noise_density, mean_span):
    assert span_corruption.lengths_for_inputs(inputs_length, noise_density, mean_span) == \
        t5_preprocessors.random_spans_helper(inputs_length, noise_density, mean_span, 1, 1)


@pytest.fixture(scope="module")
def chunks():
    """Wikipedia paragraphs tokenized with T5's vocabulary, cut into 114-token chunks both ways."""
    vocab = seqio.SentencePieceVocabulary(str(SPIECE))
    with gzip.open(SHARED_DATA / "enwiki_2015_extract/AA/wiki_00.gz", "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f if len(line) > 40 and not line.startswith("<")][:1200]
    documents = tf.data.Dataset.from_generator(
        lambda: ({"targets": vocab.encode(line)} for line in lines),
        output_signature={"targets": tf.TensorSpec([None], tf.int32)})
    ours = [x["targets"] for x in span_corruption.concat_and_split(documents, 114).as_numpy_iterator()]
    theirs = t5_preprocessors.split_tokens(t5_preprocessors.reduce_concat_tokens(documents, batch_size=128),
                                           max_tokens_per_segment=114)
    return ours, [x["targets"] for x in theirs.as_numpy_iterator()], vocab.vocab_size


def test_chunks_equal_t5(chunks):
    ours, theirs, _ = chunks
    assert len(ours) == len(theirs) > 1000
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("noise_density,mean_span", [(0.15, 3.0), (0.5, 2.0)])
def test_corruption_is_token_identical_to_t5_given_the_same_seeds(chunks, noise_density, mean_span):
    """Every chunk, with seeds split from its index: the same noise mask, inputs and targets."""
    ours, _, vocab_size = chunks

    class Vocabulary:  # all that t5's sentinel replacement reads of a vocabulary
        pass
    vocabulary = Vocabulary()
    vocabulary.vocab_size = vocab_size

    def both(tokens, index):
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(17, tf.int64), index]), 2)
        noise = span_corruption.random_spans_noise_mask(tf.size(tokens), noise_density, seeds, mean_span)
        reference = t5_preprocessors.random_spans_noise_mask(tf.size(tokens), noise_density, seeds, mean_span)
        replace = lambda mask: span_corruption.replace_spans_with_sentinels(tokens, mask, vocab_size)
        t5_replace = lambda mask: t5_preprocessors.noise_span_to_unique_sentinel(tokens, mask, vocabulary, seeds)
        return {"mask": (noise, reference), "inputs": (replace(noise), t5_replace(reference)),
                "targets": (replace(~noise), t5_replace(~reference))}

    dataset = tf.data.Dataset.from_generator(
        lambda: ((c, i) for i, c in enumerate(ours)),
        output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int64))).map(both)
    count = 0
    for pairs in dataset.as_numpy_iterator():
        for name, (mine, reference) in pairs.items():
            np.testing.assert_array_equal(mine, reference, err_msg=f"chunk {count}: {name}")
        count += 1
    assert count == len(ours)


def _builder_configs():
    import tensorflow_datasets as tfds
    return {c.name: c for c in tfds.builder_cls("glue").BUILDER_CONFIGS}


@pytest.fixture(scope="module")
def glue_tasks():
    """The GLUE Tasks whose files are in ../shared/data/glue (QQP is not), registered with T5's vocabulary."""
    return glue.register(str(SPIECE), data_dir=str(SHARED_DATA / "glue"), prefix="glue_ref")


@pytest.mark.parametrize("name", sorted(glue.TASKS))
def test_glue_format_equals_t5_on_250_dev_rows(name, glue_tasks):
    if f"glue_ref_{name}" not in glue_tasks:
        pytest.skip(f"no local {name} files")
    task = glue.TASKS[name]
    reference_fn = t5_glue_utils.get_glue_text_preprocessor(_builder_configs()[task.tfds_config])
    split = "validation_matched" if name == "mnli" else "validation"
    source = seqio.get_mixture_or_task(f"glue_ref_{name}").source
    rows = source.get_dataset(split=split, shuffle=False).take(250)
    ours = rows.map(functools.partial(glue.t5_format, task=task))
    count = 0
    for mine, theirs in zip(ours.as_numpy_iterator(), reference_fn(rows).as_numpy_iterator()):
        assert (mine["inputs"], mine["targets"]) == (theirs["inputs"], theirs["targets"])
        count += 1
    assert count == min(250, source.num_input_examples(split))


def test_glue_metrics_equal_t5():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    predictions = np.where(rng.random(300) < 0.7, labels, 1 - labels)
    predictions[:7] = -1  # no label at all
    for ours, theirs in ((metrics.accuracy, t5_metrics.accuracy), (metrics.f1_with_invalid, t5_metrics.f1_score_with_invalid),
                         (metrics.matthews_corrcoef, t5_metrics.sklearn_metrics_wrapper("matthews_corrcoef", metric_post_process_fn=lambda x: 100 * x))):
        mine, reference = ours(labels, predictions), theirs(labels, predictions)
        assert list(mine.values()) == pytest.approx(list(reference.values()), rel=1e-12)
    scores = rng.uniform(0, 5, 300)
    noisy = scores + rng.normal(0, 1, 300)
    for ours, theirs in ((metrics.pearson_corrcoef, t5_metrics.pearson_corrcoef),
                         (metrics.spearman_corrcoef, t5_metrics.spearman_corrcoef)):
        assert list(ours(scores, noisy).values()) == pytest.approx(list(theirs(scores, noisy).values()), rel=1e-12)
