"""The T5 vocabulary: seqio, HF `transformers` and raw SentencePiece give identical ids."""

import gzip
import re

import numpy as np
import pytest
import sentencepiece as spm

from miniend_jax.checkpoints.tokenizer import hf_tokenizer, seqio_vocabulary, vocab_size
from miniend_jax.errors import CheckpointError
from tests.conftest import SHARED_DATA, SPIECE

SENTINEL = re.compile(r"<extra_id_(\d+)>")


def _lines(count=200):
    """Half WikiText-2, half Wikipedia extract; every other line gets sentinels between words, as
    span-corrupted text reads when decoded. WikiText lines with its literal `<unk>` markers are left out:
    HF parses special-token strings in text, seqio does not (see checkpoints/tokenizer.py)."""
    wikitext = [l.strip() for l in open(SHARED_DATA / "wikitext2" / "valid.txt", encoding="utf-8")
                if len(l.strip()) > 40 and not l.strip().startswith("=") and "<unk>" not in l][: count // 2]
    with gzip.open(SHARED_DATA / "enwiki_2015_extract" / "AA" / "wiki_00.gz", "rt", encoding="utf-8") as f:
        wiki = [l.strip() for l in f if len(l.strip()) > 40 and not l.startswith("<")][: count // 2]
    rng = np.random.default_rng(0)
    lines = []
    for i, line in enumerate(wikitext + wiki):
        if i % 2:
            words = line.split(" ")
            for k, at in enumerate(sorted(rng.choice(len(words) + 1, size=3, replace=False))[::-1]):
                words.insert(at, f"<extra_id_{int(rng.integers(0, 100))}>")
            line = " ".join(words)
        lines.append(line)
    assert len(lines) == count
    return lines


def _sentencepiece_ids(processor, text):
    """Raw SentencePiece on the text between sentinels; a sentinel k is id piece_size + 99 - k."""
    ids, position = [], 0
    for match in SENTINEL.finditer(text):
        ids += processor.encode(text[position: match.start()])
        ids.append(processor.get_piece_size() + 99 - int(match.group(1)))
        position = match.end()
    return ids + processor.encode(text[position:])


def test_three_tokenizers_agree_on_shared_text():
    vocabulary = seqio_vocabulary(str(SPIECE))
    tokenizer = hf_tokenizer(str(SPIECE))
    processor = spm.SentencePieceProcessor(model_file=str(SPIECE))
    lines = _lines()
    with_sentinels = sum(bool(SENTINEL.search(l)) for l in lines)
    assert with_sentinels == 100
    for line in lines:
        seqio_ids = list(vocabulary.encode(line))
        hf_ids = tokenizer(line, add_special_tokens=False).input_ids
        sp_ids = _sentencepiece_ids(processor, line)
        assert seqio_ids == hf_ids == sp_ids, line
        if SENTINEL.search(line):
            assert max(seqio_ids) >= 32000  # sentinels were recognised, not spelled out


def test_sentinel_ids_and_specials():
    vocabulary = seqio_vocabulary(str(SPIECE))
    tokenizer = hf_tokenizer(str(SPIECE))
    assert vocabulary.vocab_size == len(tokenizer) == vocab_size(str(SPIECE)) == 32100
    for k in (0, 1, 50, 99):
        assert tokenizer.convert_tokens_to_ids(f"<extra_id_{k}>") == 32099 - k
        assert list(vocabulary.encode(f"<extra_id_{k}>")) == [32099 - k]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (vocabulary.pad_id, vocabulary.eos_id) == (0, 1)
    assert tokenizer("Hello world").input_ids[-1] == 1  # HF appends EOS


def test_missing_vocabulary_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*spiece.model"):
        hf_tokenizer(str(tmp_path / "nope.model"))


def _span_corrupted_texts(vocabulary, count=150):
    """Decoded inputs and targets of real span-corrupted Wikipedia paragraphs: sentinels before
    punctuation, inside words and at the start, as pretraining examples have them."""
    import tensorflow as tf
    from tasks.span_corruption import random_spans_noise_mask, replace_spans_with_sentinels
    with gzip.open(SHARED_DATA / "enwiki_2015_extract" / "AA" / "wiki_01.gz", "rt", encoding="utf-8") as f:
        paragraphs = [l.strip() for l in f if len(l.strip()) > 80 and not l.startswith("<")][:count]
    texts = []
    for i, paragraph in enumerate(paragraphs):
        tokens = tf.constant(list(vocabulary.encode(paragraph))[:114], tf.int32)
        mask = random_spans_noise_mask(tf.size(tokens), 0.15, tf.constant([[i, 1], [i, 2]]), 3.0)
        for span_mask in (mask, tf.logical_not(mask)):
            ids = replace_spans_with_sentinels(tokens, span_mask, vocabulary.vocab_size).numpy().tolist()
            texts.append(vocabulary.decode(ids))
    return texts


def test_hf_views_give_seqio_ids_on_span_corrupted_text(tmp_path):
    """The HF view and the exported tokenizer (reloaded with AutoTokenizer, as users do) encode decoded
    span-corrupted examples to seqio's ids. transformers' own T5Tokenizer pipeline differed on most of
    them (an extra "▁" before a sentinel after a space and after a sentinel before punctuation)."""
    import transformers
    from miniend_jax.checkpoints.tokenizer import save_hf_tokenizer
    vocabulary = seqio_vocabulary(str(SPIECE))
    save_hf_tokenizer(str(SPIECE), str(tmp_path))
    views = {"view": hf_tokenizer(str(SPIECE)), "exported": transformers.AutoTokenizer.from_pretrained(str(tmp_path))}
    texts = _span_corrupted_texts(vocabulary)
    assert sum(bool(re.search(r"<extra_id_\d+>[.,;:)]", t)) for t in texts) > 20  # sentinels before punctuation
    texts += ["<extra_id_0>. Hello", "a <extra_id_1>, b", "x <extra_id_0> y", "two  spaces  ", " leading"]
    for name, tokenizer in views.items():
        for text in texts:
            assert tokenizer(text, add_special_tokens=False).input_ids == list(vocabulary.encode(text)), (name, text)
        assert tokenizer("<extra_id_0>. Hello").input_ids == [32099, 5, 8774, 1]
