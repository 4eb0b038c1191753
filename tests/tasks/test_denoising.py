"""BART's denoising objective against its definition (Lewis et al. 2020, section 2.2; fairseq
`denoising_dataset.py`): mask counts, Poisson span lengths, sentence permutation, blocks, the Task."""

import collections
import gzip
import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats
import seqio
import tensorflow as tf

from miniend_jax.errors import ConfigError
from tasks.denoising import (denoising, mask_token_id, num_to_mask, poisson_span_lengths, register_local_denoising,
                             sentence_permutation, split_sentences, text_infilling)
from tests.conftest import SHARED_DATA, SPIECE

MASK = 5  # a mask id no test chunk holds (their tokens are >= 100)


def _vocab():
    return seqio.SentencePieceVocabulary(str(SPIECE), extra_ids=100)


def _infill_many(chunks, seed=0, **kw):
    """`text_infilling` of each chunk (rows of token ids, any lengths), chunk i with seed (seed, i), in one graph."""
    kw.setdefault("mask_id", MASK)
    seeds = np.stack([np.full(len(chunks), seed), np.arange(len(chunks))], axis=1).astype(np.int32)
    rows = tf.ragged.constant([list(map(int, c)) for c in chunks], dtype=tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((rows, seeds))
    return [x.numpy() for x in ds.map(lambda tokens, s: text_infilling(tokens, s, **kw))]


def _distinct_chunks(count, length, seed=0):
    """`count` chunks of `length` token ids, all different within a chunk (so alignment is unique)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(np.arange(100, 32000))[:length] for _ in range(count)])


def _spans(inputs, targets):
    """Aligns infilled `inputs` with the original `targets` (distinct tokens): the length of the span each
    replacement token stands for, and which tokens replaced the spans. Asserts what the definition promises:
    the other tokens are the targets in their order, and two replacements never touch."""
    position = {t: i for i, t in enumerate(targets)}
    assert len(position) == len(targets)
    lengths, replacements, j = [], [], 0
    for k, token in enumerate(inputs):
        if j < len(targets) and token == targets[j]:
            j += 1
            continue
        assert k == 0 or inputs[k - 1] == targets[j - 1], "two spans touch"
        end = position[inputs[k + 1]] if k + 1 < len(inputs) else len(targets)
        assert end >= j, "kept tokens out of order"
        lengths.append(end - j)
        replacements.append(token)
        j = end
    assert j == len(targets)
    return lengths, replacements


def test_num_to_mask_is_an_exact_ceiling():
    # float32 0.3 * 200 is 60.000002; the definition's ceil(0.3 * 200) is 60.
    got = [int(num_to_mask(tf.constant(n), 0.3)) for n in (0, 1, 3, 10, 11, 200, 201, 511, 1023)]
    assert got == [0, 1, 1, 3, 4, 60, 61, 154, 307]
    assert int(num_to_mask(tf.constant(7), 1.0)) == 7 and int(num_to_mask(tf.constant(7), 0.0)) == 0


def test_exactly_ceil_ratio_times_length_tokens_are_masked():
    """Spans never overlap nor run past the end, so every chunk loses exactly ceil(0.3 * L) tokens, and
    each span is one mask token; targets are untouched by construction (the function sees only inputs)."""
    chunks = _distinct_chunks(200, 200)
    spans_per_chunk = []
    for inputs, tokens in zip(_infill_many(chunks), chunks):
        lengths, replacements = _spans(list(inputs), list(tokens))
        assert sum(lengths) == math.ceil(0.3 * 200) == 60
        assert set(replacements) == {MASK} and list(inputs).count(MASK) == len(lengths)
        assert len(inputs) == 200 - 60 + len(lengths) <= 200
        spans_per_chunk.append(len(lengths))
    # About 60 / 3 spans each, and the places differ from chunk to chunk.
    assert 18 < np.mean(spans_per_chunk) < 23
    # Short chunks: the budget is still exact and the inputs are never longer than the chunk.
    short = [c for length in range(1, 40) for c in _distinct_chunks(10, length, seed=length)]
    for inputs, tokens in zip(_infill_many(short, seed=1), short):
        lengths, _ = _spans(list(inputs), list(tokens))
        assert sum(lengths) == math.ceil(0.3 * len(tokens)) and len(inputs) <= len(tokens)


def test_masks_fall_anywhere_in_the_chunk():
    chunks = _distinct_chunks(200, 200)
    hits = np.zeros(200)
    for inputs, tokens in zip(_infill_many(chunks, seed=1), chunks):
        kept = set(inputs.tolist())
        hits += [t not in kept for t in tokens]
    assert hits[0] > 0 and hits[-1] > 0  # first and last token can be masked (EOS comes later)
    assert hits[:100].mean() == pytest.approx(hits[100:].mean(), rel=0.1)
    assert hits.mean() / 200 == pytest.approx(0.3)


def test_span_lengths_follow_poisson():
    """The span lengths read back from the alignment are Poisson(3). All but one per chunk are i.i.d.
    draws; the last is cut to the budget (fairseq's rule), which lowers the mean of a chunk's spans by
    about 4.3 / M (simulated; 0.014 at M = 300, under one standard error of the ~6,000 spans here), so
    the chunks are long."""
    chunks = _distinct_chunks(60, 1000, seed=2)
    lengths = [n for inputs, tokens in zip(_infill_many(chunks, seed=2), chunks)
               for n in _spans(list(inputs), list(tokens))[0]]
    lengths = np.array(lengths)
    standard_error = math.sqrt(3.0 / len(lengths))  # Poisson: variance = mean
    assert len(lengths) > 5000
    assert abs(lengths.mean() - 3.0) < 4 * standard_error
    assert lengths.var() == pytest.approx(3.0, rel=0.1)
    assert (lengths == 0).sum() > 0  # zero-length spans (insertions) occur

    def p_value(lam):
        observed = np.bincount(np.minimum(lengths, 9), minlength=10)
        pmf = scipy.stats.poisson.pmf(np.arange(9), lam)
        expected = len(lengths) * np.append(pmf, 1 - pmf.sum())
        return scipy.stats.chisquare(observed, expected).pvalue

    assert p_value(3.0) > 1e-3
    assert p_value(3.5) < 1e-6 and p_value(2.5) < 1e-6  # the comparison would see another lambda

    other = _infill_many(chunks, seed=2, poisson_lambda=6.0)
    longer = [n for inputs, tokens in zip(other, chunks) for n in _spans(list(inputs), list(tokens))[0]]
    assert np.mean(longer) == pytest.approx(6.0, rel=0.05)


def test_poisson_span_lengths_cover_the_budget_exactly():
    for total in (0, 1, 2, 5, 60):
        for s in range(20):
            lengths = poisson_span_lengths(tf.constant(total), 3.0, tf.constant([s, total])).numpy()
            assert lengths.sum() == total and (lengths >= 0).all()
            assert len(lengths) == 0 or lengths[-1] > 0  # the last span reaches the budget
    assert len(poisson_span_lengths(tf.constant(0), 3.0, tf.constant([0, 0]))) == 0


def test_random_ratio_replaces_that_fraction_of_spans_by_ordinary_tokens():
    chunks = _distinct_chunks(100, 200, seed=3)
    special = [0, 1, 2, MASK]
    replaced = []
    for inputs, tokens in zip(_infill_many(chunks, seed=3, random_ratio=0.5, random_vocab_size=32000,
                                           special_ids=special), chunks):
        lengths, replacements = _spans(list(inputs), list(tokens))
        assert sum(lengths) == 60
        replaced += [r != MASK for r in replacements]
        assert all(0 <= r < 32000 and r not in special[:3] for r in replacements)
    fraction, n = np.mean(replaced), len(replaced)
    assert abs(fraction - 0.5) < 4 * math.sqrt(0.25 / n)
    # The draw excluding special ids covers the rest of the range, the top included.
    ids = _infill_many([[100, 101, 102]] * 400, random_ratio=1.0, random_vocab_size=6, special_ids=[0, 2, 5],
                       mask_ratio=0.34)
    assert {int(x) for row in ids for x in row if x < 100} == {1, 3, 4}
    with pytest.raises(ValueError, match="random_vocab_size"):
        text_infilling(tf.constant([100, 101]), tf.constant([0, 0]), mask_id=MASK, random_ratio=0.1)


def test_infilling_is_seeded():
    chunk = _distinct_chunks(1, 200)
    same = _infill_many(np.repeat(chunk, 2, axis=0))  # rows 0 and 1: seeds (0, 0) and (0, 1)
    assert not np.array_equal(same[0], same[1])
    np.testing.assert_array_equal(_infill_many(chunk, seed=4)[0], _infill_many(chunk, seed=4)[0])
    assert not np.array_equal(_infill_many(chunk, seed=4)[0], _infill_many(chunk, seed=5)[0])


# --- sentence permutation ---------------------------------------------------------------------------


def _sentences(text):
    return [s.decode() for s in split_sentences(tf.constant(text)).numpy()]


def test_split_sentences():
    assert _sentences("A b.  C d!\tE? f.x. G") == ["A b.", "C d!", "E?", "f.x.", "G"]
    assert _sentences("No end here") == ["No end here"] and _sentences("") == [] and _sentences(" ") == []
    assert _sentences("Trailing. ") == ["Trailing."] and _sentences("3.5 m. Done.") == ["3.5 m.", "Done."]


def test_sentence_permutation_permutes_within_the_document():
    text = "The cat sat. It was warm! Was it? Yes. Then it left."
    sentences = _sentences(text)
    outputs = set()
    for s in range(30):
        out = sentence_permutation(tf.constant(text), tf.constant([s, 0])).numpy().decode()
        assert sorted(_sentences(out)) == sorted(sentences)
        outputs.add(out)
    assert len(outputs) > 20
    one = "A single sentence, with commas and 3.5 numbers."
    assert all(sentence_permutation(tf.constant(one), tf.constant([s, 1])).numpy().decode() == one for s in range(5))
    same = [sentence_permutation(tf.constant(text), tf.constant([9, 9])).numpy() for _ in range(2)]
    assert same[0] == same[1]


def test_every_order_of_three_sentences_is_equally_likely():
    text = "Alpha one. Beta two! Gamma three?"
    seeds = tf.data.Dataset.range(1200).map(lambda i: tf.stack([i, tf.constant(7, tf.int64)]))
    counts = collections.Counter(x.numpy() for x in seeds.map(lambda s: sentence_permutation(tf.constant(text), s)))
    orders = {" ".join(p).encode() for p in itertools.permutations(_sentences(text))}
    assert set(counts) == orders
    assert scipy.stats.chisquare(list(counts.values())).pvalue > 1e-3


# --- the preprocessor -----------------------------------------------------------------------------


def _run_denoising(documents, length, seed=0, vocab=None, **kw):
    vocab = vocab or _vocab()
    features = {"inputs": seqio.Feature(vocab, add_eos=True), "targets": seqio.Feature(vocab, add_eos=True)}
    kw.setdefault("mask_id", mask_token_id(vocab))
    with seqio.map_seed_manager(seed):
        ds = denoising(tf.data.Dataset.from_tensor_slices({"targets": documents}),
                       {"inputs": length, "targets": length}, features, **kw)
    return [{k: v.numpy() for k, v in x.items()} for x in ds], vocab


def test_documents_never_mix_and_inputs_permute_their_own_targets():
    documents = ["Red apples grow. Red trees stand. Red soil lies!", "One lonely sentence about blue.",
                 "Green grass. Green hills? Green lakes glitter. Green again."]
    examples, vocab = _run_denoising(documents, 64, mask_ratio=0.0)
    assert len(examples) == 3
    for example, document in zip(examples, documents):
        assert vocab.decode(example["targets"].tolist()) == document
        assert sorted(_sentences(vocab.decode(example["inputs"].tolist()))) == sorted(_sentences(document))


def _wiki_paragraphs(count):
    with gzip.open(SHARED_DATA / "enwiki_2015_extract" / "AA" / "wiki_00.gz", "rt", encoding="utf-8") as f:
        lines = (line.strip() for line in f)
        return list(itertools.islice((l for l in lines if l and not l.startswith(("<doc", "</doc"))), count))


def test_real_text_is_cut_into_blocks_of_whole_sentences():
    """enwiki paragraphs at length 128: no text lost or repeated, every chunk fits with its EOS, the
    masked count is exact, and (without masking) every example's inputs are the sentences of its own
    targets in another order. (A paragraph's last sentence may lack its full stop, so once moved it reads
    as part of the next: the check finds each target sentence in the inputs rather than splitting them.)"""
    paragraphs = _wiki_paragraphs(150)
    vocab = _vocab()
    examples, _ = _run_denoising(paragraphs, 128)
    assert len(examples) > len(paragraphs)  # long paragraphs give several examples
    np.testing.assert_array_equal(np.concatenate([x["targets"] for x in examples]),
                                  np.concatenate([vocab.encode(p) for p in paragraphs]))
    mask = mask_token_id(vocab)
    for x in examples:
        n, masks = len(x["targets"]), int((x["inputs"] == mask).sum())
        assert n <= 127
        assert n - (len(x["inputs"]) - masks) == math.ceil(0.3 * n)  # removed tokens
    examples, _ = _run_denoising(paragraphs[:60], 128, mask_ratio=0.0)
    permuted = 0
    for x in examples:
        inputs, targets = vocab.decode(x["inputs"].tolist()), vocab.decode(x["targets"].tolist())
        assert len(inputs) == len(targets) and all(s in inputs for s in _sentences(targets))
        permuted += inputs != targets
    assert permuted > len(examples) // 3


def test_a_long_sentence_is_cut_into_chunks():
    sentence = " ".join(f"word{i}" for i in range(80)) + "."
    examples, vocab = _run_denoising([sentence], 32, mask_ratio=0.0)
    assert len(examples) > 2 and all(len(x["targets"]) <= 31 for x in examples)
    assert all(np.array_equal(x["inputs"], x["targets"]) for x in examples)
    assert np.concatenate([x["targets"] for x in examples]).tolist() == vocab.encode(sentence)


def test_mask_token_id():
    assert mask_token_id(_vocab()) == 32099  # <extra_id_0>

    class WithMask:
        mask_id = 50264
    assert mask_token_id(WithMask()) == 50264
    with pytest.raises(ConfigError, match="no mask token"):
        mask_token_id(seqio.SentencePieceVocabulary(str(SPIECE), extra_ids=0))


@pytest.mark.parametrize("kw,match", [({"mask_ratio": 1.5}, "mask_ratio"), ({"poisson_lambda": 0.0}, "poisson_lambda"),
                                      ({"random_ratio": -0.1}, "random_ratio"), ({"mask_id": 40000}, "mask_id")])
def test_bad_settings_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        _run_denoising(["A. B."], 16, **kw)


def test_registered_task_end_to_end(tmp_path):
    documents = ["The quick brown fox jumps over the lazy dog. Then it sleeps.",
                 "Pack my box with five dozen liquor jugs! It is heavy.",
                 "How vexingly quick daft zebras jump? Quite quick."]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents[:2]))
    (tmp_path / "b.txt").write_text(documents[2] + "\n")
    name = register_local_denoising(str(tmp_path / "*"), str(SPIECE))
    assert register_local_denoising(str(tmp_path / "*"), str(SPIECE)) == name
    vocab = _vocab()

    def examples(seed):
        ds = seqio.get_mixture_or_task(name).get_dataset({"inputs": 64, "targets": 64}, split="train",
                                                         shuffle=False, seed=seed)
        return [{k: v.numpy() for k, v in x.items()} for x in ds]

    first = examples(0)
    assert sorted(vocab.decode(x["targets"].tolist()) for x in first) == sorted(documents)
    for x in first:
        assert x["inputs"][-1] == x["targets"][-1] == vocab.eos_id
        assert 32099 in x["inputs"] and len(x["inputs"]) <= len(x["targets"])
    assert all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(first, examples(0)))
    assert not all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(first, examples(1)))
    same = register_local_denoising(str(tmp_path / "*"), str(SPIECE), mask_ratio=0.5)
    assert same != name  # another definition, another Task


def test_barts_opening_token_is_never_masked(tmp_path):
    """With BART's byte-level BPE every block opens with `<s>`; fairseq never masks it, and neither is it here,
    even when nearly every token is masked."""
    from miniend_jax.checkpoints.bpe import ByteLevelBPEVocabulary, train_bpe
    vocab = ByteLevelBPEVocabulary(train_bpe(_wiki_paragraphs(300), 400, str(tmp_path / "bpe")))
    examples, _ = _run_denoising(_wiki_paragraphs(40), 64, vocab=vocab, mask_ratio=0.9, mask_id=vocab.mask_id)
    openings = [e for e in examples if e["targets"][0] == vocab.bos_id]
    assert len(openings) >= 30
    assert all(e["inputs"][0] == vocab.bos_id for e in openings)
    assert sum(int(vocab.mask_id in e["inputs"][1:]) for e in openings) == len(openings)
