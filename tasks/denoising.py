"""BART's pretraining objective (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training",
sections 2.2 and 3), written for seqio pipelines: sentence permutation followed by text infilling. The
reference implementation is fairseq's `fairseq/data/denoising_dataset.py` (`DenoisingDataset`); bart-large
was trained with `--mask 0.3 --mask-length span-poisson --replace-length 1 --permute-sentences 1.0
--rotate 0 --mask-random 0.1`, Poisson lambda 3 in the paper.

The pipeline (`denoising`), one document (one example of the source, e.g. one paragraph) at a time:
1. Blocks (`sentence_blocks`): the document is split into sentences (after `.`, `!` or `?` followed by
   whitespace; `split_sentences`) and consecutive sentences are grouped greedily into blocks of at most
   `targets_length - 1` tokens (room for EOS). Documents never share a block. A block is one example: its
   text, sentences joined by single spaces, is the `targets`. This is fairseq's block of whole sentences
   (`TokenBlockDataset`, `break_mode="complete_doc"`) within which it permutes; cutting the document
   into blocks before permuting is what keeps the inputs of every example a corruption of its own targets.
2. Sentence permutation (`sentence_permutation`): the `inputs` are the block's sentences in a uniformly
   random order, joined by single spaces.
3. Both are tokenized. A block longer than the chunk (a single sentence of more tokens than fit) is cut
   into chunks of `targets_length - 1` tokens; a chunk of one sentence has nothing to permute, so its
   inputs are its targets (`split_long_blocks`).
4. Text infilling (`text_infilling`) of the inputs: `ceil(mask_ratio * length)` tokens are covered by
   spans with Poisson(`poisson_lambda`) lengths; each span becomes one mask token (or, for a fraction
   `random_ratio` of the spans, one random token). The targets are the uncorrupted block; seqio's
   `append_eos_after_trim` then appends EOS to both, so EOS is never masked.

Where this differs from fairseq (each is stated where it happens):
- sentences are found in the text, not as fairseq's full-stop token (`"."` of GPT-2's BPE, or the EOS that
  ends each line), and the permutation is applied to text before tokenization;
- masking is per token; fairseq masks whole words (`--mask-whole-words`, spans start at word starts and
  count words);
- spans never overlap and never touch: at least one unmasked token lies between two spans, so exactly
  `ceil(mask_ratio * length)` tokens are removed and every mask in the inputs stands for exactly one span.
  fairseq draws distinct start positions but lets a span run into the next (the two merge into one mask,
  fewer tokens are removed) and cuts spans at the end of the document;
- a span of length 0 is a span like the others: it takes its own place between two unmasked tokens and
  inserts one mask token there. fairseq removes zero-length spans from the span list and inserts as many
  mask tokens at uniformly random positions afterwards (`add_insertion_noise`), where they may sit next to
  other masks.

Randomness is stateless (seeds from `seqio.map_over_dataset`), so a pipeline is reproducible from its
seed and its tf.data iterator can be checkpointed.
"""

from __future__ import annotations

import fractions
import functools
import hashlib
import json
from typing import Sequence

from tasks.runtime import tf  # noqa: I001 - before seqio: TensorFlow on the host, quiet

import seqio

from miniend_jax import files as storage
from miniend_jax.errors import ConfigError
from tasks import registry
from tasks.pretraining import _FileList, file_formats, make_reader, resolve_files, split_files, vocabulary

SENTENCE_END = r"([.!?])\s+"  # RE2: a sentence ends at . ! or ? followed by ASCII whitespace
_MARK = "\x00"                # marks the sentence ends before the split


def mask_token_id(vocab) -> int:
    """The id of the vocabulary's mask token: `vocab.mask_id` where the vocabulary has one (a BART-style
    `<mask>`), else for a `seqio.SentencePieceVocabulary` with extra ids the first sentinel
    `vocab.vocab_size - 1` (`<extra_id_0>`, the id T5's span corruption also uses first).

    Raises:
      ConfigError: the vocabulary has neither.
    """
    mask_id = getattr(vocab, "mask_id", None)
    if mask_id is not None:
        return int(mask_id)
    if isinstance(vocab, seqio.SentencePieceVocabulary) and vocab.extra_ids > 0:
        return vocab.vocab_size - 1
    raise ConfigError(f"the vocabulary {type(vocab).__name__} has no mask token and no extra ids; "
                      "pass mask_id explicitly.")


# --- sentence permutation (text) ---------------------------------------------------------------------


def split_sentences(text: tf.Tensor) -> tf.Tensor:
    """The sentences of a document: string `[num_sentences]` from a scalar string.

    A sentence ends after `.`, `!` or `?` followed by whitespace (RE2's `\\s`: space, tab, newline, CR,
    form feed); the punctuation stays with its sentence, the whitespace is dropped and each sentence is
    stripped. Empty pieces are dropped (an empty or blank document has no sentences). The split marks
    sentence ends with NUL, so a NUL character in the text is first replaced by a space.
    """
    text = tf.strings.regex_replace(text, r"\x00", " ")
    marked = tf.strings.regex_replace(text, SENTENCE_END, r"\1" + _MARK)
    pieces = tf.strings.strip(tf.strings.split(marked, _MARK))
    return tf.boolean_mask(pieces, tf.strings.length(pieces) > 0)


def sentence_permutation(text: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """BART's sentence permutation (section 2.2): the sentences of `text` (`split_sentences`) in a
    uniformly random order (`seqio.utils.stateless_shuffle`), joined by single spaces.

    Args:
      text: scalar tf.string, one document (or block of one).
      seed: int `[2]`, the stateless seed.
    Returns:
      scalar tf.string. A document of one sentence comes back stripped, otherwise unchanged.
    """
    sentences = split_sentences(text)
    return tf.strings.reduce_join(seqio.utils.stateless_shuffle(sentences, seed), separator=" ")


def _token_counts(strings: tf.Tensor, vocab) -> tf.Tensor:
    """int32 `[n]`: the number of tokens of each string of a 1-D string tensor."""
    ids = vocab.encode_tf(strings)
    if isinstance(ids, tf.RaggedTensor):  # seqio's vocabularies tokenize a vector into ragged rows
        return tf.cast(ids.row_lengths(), tf.int32)
    return tf.map_fn(lambda s: tf.size(vocab.encode_tf(s)), strings, fn_output_signature=tf.int32)


def _greedy_blocks(counts: tf.Tensor, max_tokens: int) -> tf.Tensor:
    """int32 `[n]`: the block of each sentence, sentences in order filling a block while its tokens stay
    within `max_tokens`. A sentence longer than `max_tokens` is a block of its own."""
    def step(state, count):
        block, used = state
        new = tf.logical_and(used > 0, used + count > max_tokens)
        return block + tf.cast(new, tf.int32), tf.where(new, count, used + count)

    blocks, _ = tf.scan(step, counts, initializer=(tf.constant(0), tf.constant(0)))
    return blocks


def sentence_blocks(text: tf.Tensor, vocab, max_tokens: int | None) -> tf.Tensor:
    """The blocks of a document: string `[num_blocks]` from a scalar string, each block consecutive
    sentences (`split_sentences`) joined by single spaces, of at most `max_tokens` tokens unless it is a
    single longer sentence (`None`: the whole document is one block).

    A sentence's tokens are counted as it stands in the block, after a space unless it comes first; for
    SentencePiece (which splits at whitespace) the block's tokens are then exactly the sum (checked on
    enwiki by the tests). A vocabulary whose tokens cross a sentence's boundary may give a block a few
    tokens more: `split_long_blocks` cuts it.
    """
    sentences = split_sentences(text)
    if max_tokens is None:
        blocks = tf.zeros_like(sentences, tf.int32)
    else:
        spaced = tf.concat([sentences[:1], tf.strings.join([" ", sentences[1:]])], axis=0)
        blocks = _greedy_blocks(_token_counts(spaced, vocab), max_tokens)
    grouped = tf.RaggedTensor.from_value_rowids(sentences, tf.cast(blocks, tf.int64))
    return tf.strings.reduce_join(grouped, axis=1, separator=" ")


# --- text infilling (tokens) -------------------------------------------------------------------------


def num_to_mask(length: tf.Tensor, mask_ratio: float) -> tf.Tensor:
    """int32 scalar `ceil(mask_ratio * length)` (fairseq: `math.ceil(num_words * p)`), in integer
    arithmetic: `mask_ratio` is read as the nearest fraction with a denominator up to 10**6 (0.3 = 3/10),
    so an exact product is not rounded up by floating-point error (float32 0.3 * 200 = 60.000002)."""
    ratio = fractions.Fraction(mask_ratio).limit_denominator(10**6)
    length = tf.cast(length, tf.int64)
    return tf.cast((length * ratio.numerator + ratio.denominator - 1) // ratio.denominator, tf.int32)


def poisson_span_lengths(total: tf.Tensor, poisson_lambda: float, seed: tf.Tensor) -> tf.Tensor:
    """int32 `[num_spans]`: span lengths drawn i.i.d. from Poisson(`poisson_lambda`) until they cover
    `total` tokens, the last one cut to the budget so that they sum to `total` exactly (fairseq's
    `add_whole_word_mask`, `span-poisson`). Zero-length draws before the budget is reached are spans too
    (insertions). `total == 0` gives no span.

    Args:
      total: int32 scalar, the number of tokens to mask.
      poisson_lambda: the Poisson mean (> 0).
      seed: int `[2]`.
    """
    total = tf.cast(total, tf.int32)
    draws = tf.maximum(total, 1)  # per round; `total` draws cover `total` tokens but for a rare few rounds

    def more(round_, lengths):
        return tf.reduce_sum(lengths) < total

    def draw(round_, lengths):
        round_seed = tf.random.experimental.stateless_fold_in(seed, round_)
        new = tf.random.stateless_poisson([draws], round_seed, lam=poisson_lambda, dtype=tf.int32)
        return round_ + 1, tf.concat([lengths, new], axis=0)

    _, lengths = tf.while_loop(more, draw, (tf.constant(0), tf.zeros([0], tf.int32)),
                               shape_invariants=(tf.TensorShape([]), tf.TensorShape([None])))
    before = tf.cumsum(lengths, exclusive=True)
    num_spans = tf.reduce_sum(tf.cast(before < total, tf.int32))
    return tf.minimum(lengths, total - before)[:num_spans]


def _random_token_ids(shape, seed: tf.Tensor, size: int, excluded: Sequence[int]) -> tf.Tensor:
    """int32 ids uniform over `[0, size)` without the ids in `excluded`."""
    excluded = sorted({int(i) for i in excluded if 0 <= i < size})
    ids = tf.random.stateless_uniform(shape, seed, minval=0, maxval=size - len(excluded), dtype=tf.int32)
    for skip in excluded:  # ascending: each excluded id at or below the value moves it up by one
        ids += tf.cast(ids >= skip, tf.int32)
    return ids


def text_infilling(tokens: tf.Tensor, seed: tf.Tensor, *, mask_id: int, mask_ratio: float = 0.3,
                   poisson_lambda: float = 3.0, random_ratio: float = 0.0, random_vocab_size: int | None = None,
                   special_ids: Sequence[int] = ()) -> tf.Tensor:
    """BART's text infilling (section 2.2; fairseq `DenoisingDataset.add_whole_word_mask` with
    `replace_length=1`) of one chunk.

    1. `M = ceil(mask_ratio * L)` tokens are to be masked (`num_to_mask`); span lengths are drawn from
       Poisson(`poisson_lambda`) until they cover `M`, the last cut to the budget (`poisson_span_lengths`).
    2. The spans are placed without overlap and with at least one unmasked token between two spans: the
       `L - M` unmasked tokens leave `L - M + 1` gaps (before, between and after them) and the spans take
       distinct gaps, a uniformly random set, in a uniformly random order of the lengths. Every token,
       the first and last included, can be masked; the EOS is appended later and never is.
       If there are more spans than `min(L - M + 1, M)`, the last ones are merged into one (total still
       `M`). Only very short chunks reach this; with it, the inputs are never longer than the chunk.
    3. Each span, of any length, becomes one token: the mask, or with probability `random_ratio` per span
       a token drawn uniformly from `[0, random_vocab_size)` without `special_ids` (fairseq's
       `--mask-random`, which draws from the whole dictionary). A span of length 0 thus inserts one mask
       (or random) token between two unmasked tokens.

    Args:
      tokens: int32 `[L]`, the uncorrupted chunk without EOS.
      seed: int `[2]`, the stateless seed.
      mask_id: the mask token.
      random_vocab_size, special_ids: the range of random tokens; needed when `random_ratio > 0`.
    Returns:
      int32 `[L - M + num_spans]`, at most `L` long: the unmasked tokens in their order, one token per span.
    """
    if random_ratio > 0 and random_vocab_size is None:
        raise ValueError("random_ratio > 0 needs random_vocab_size (the range of random tokens).")
    tokens = tf.convert_to_tensor(tokens)
    length = tf.size(tokens)
    seeds = tf.random.experimental.stateless_split(seed, 5)
    total = num_to_mask(length, mask_ratio)
    lengths = poisson_span_lengths(total, poisson_lambda, seeds[0])

    # Merge the spans beyond the number that fit (distinct gaps, no longer inputs) into the last that does.
    num_spans = tf.minimum(tf.size(lengths), tf.minimum(length - total + 1, total))
    lengths = tf.math.unsorted_segment_sum(lengths, tf.minimum(tf.range(tf.size(lengths)), num_spans - 1),
                                           num_spans)
    lengths = seqio.utils.stateless_shuffle(lengths, seeds[1])
    gaps = tf.sort(seqio.utils.stateless_shuffle(tf.range(length - total + 1), seeds[2])[:num_spans])

    # Masked positions in the chunk: span j starts after gaps[j] unmasked and sum(lengths[:j]) masked tokens.
    starts = gaps + tf.cumsum(lengths, exclusive=True)
    ends = starts + lengths
    edges = (tf.math.unsorted_segment_sum(tf.ones_like(starts), starts, length + 1)
             - tf.math.unsorted_segment_sum(tf.ones_like(ends), ends, length + 1))
    masked = tf.cumsum(edges)[:length] > 0
    kept = tf.boolean_mask(tokens, tf.logical_not(masked))

    # Output positions: unmasked token t follows the spans in gaps 0..t; span j follows gaps[j] tokens and j spans.
    kept_index = tf.range(tf.size(kept))
    kept_at = kept_index + tf.searchsorted(gaps, kept_index, side="right")
    span_at = gaps + tf.range(num_spans)
    replacement = tf.fill([num_spans], tf.constant(mask_id, tokens.dtype))
    if random_ratio > 0:
        is_random = tf.random.stateless_uniform([num_spans], seeds[3]) < random_ratio
        random_ids = tf.cast(_random_token_ids([num_spans], seeds[4], random_vocab_size, special_ids), tokens.dtype)
        replacement = tf.where(is_random, random_ids, replacement)
    return tf.scatter_nd(tf.concat([kept_at, span_at], axis=0)[:, None], tf.concat([kept, replacement], axis=0),
                         [tf.size(kept) + num_spans])


# --- the seqio preprocessor ----------------------------------------------------------------------------


def document_blocks(dataset: tf.data.Dataset, vocab, max_tokens: int | None) -> tf.data.Dataset:
    """Documents (scalar string `targets`) -> one example {"targets": block text} per block
    (`sentence_blocks`); blank documents give none."""
    def blocks(example):
        return {"targets": sentence_blocks(example["targets"], vocab, max_tokens)}
    return dataset.map(blocks, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def split_long_blocks(dataset: tf.data.Dataset, tokens_length: int | None) -> tf.data.Dataset:
    """Tokenized blocks -> chunks of at most `tokens_length` tokens: a block that fits is one chunk as it
    is; a longer one (one long sentence, nothing to permute) is cut into consecutive chunks of
    `tokens_length` tokens whose inputs are their targets. `None`: nothing is cut."""
    if tokens_length is None:
        return dataset

    def split(example):
        inputs, targets = example["inputs"], example["targets"]
        size = tf.size(targets)
        starts = tf.range(0, tf.maximum(size, 1), tokens_length)
        source = tf.cond(size <= tokens_length, lambda: inputs, lambda: targets)
        return {"inputs": tf.RaggedTensor.from_row_starts(source, starts),
                "targets": tf.RaggedTensor.from_row_starts(targets, starts)}
    return dataset.map(split, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def _random_token_range(vocab, mask_id: int) -> tuple[int, list[int]]:
    """(size, special ids): random tokens are drawn from `[0, size)` without the special ids. `size` leaves
    out the extra ids (T5's sentinels); the special ids are PAD, EOS, UNK, BOS (where the vocabulary has
    them) and the mask."""
    size = vocab.vocab_size - (getattr(vocab, "extra_ids", 0) or 0)
    specials = [getattr(vocab, name, None) for name in ("pad_id", "eos_id", "unk_id", "bos_id")] + [mask_id]
    return size, sorted({int(i) for i in specials if i is not None and 0 <= i < size})


def _check(mask_id: int, vocab_size: int, mask_ratio: float, poisson_lambda: float, random_ratio: float) -> None:
    if not 0 <= mask_id < vocab_size:
        raise ConfigError(f"mask_id={mask_id} is not an id of the vocabulary (size {vocab_size}).")
    if not 0.0 <= mask_ratio <= 1.0:
        raise ConfigError(f"mask_ratio={mask_ratio} must be in [0, 1].")
    if not poisson_lambda > 0:
        raise ConfigError(f"poisson_lambda={poisson_lambda} must be > 0 (a mean span length).")
    if not 0.0 <= random_ratio <= 1.0:
        raise ConfigError(f"random_ratio={random_ratio} must be in [0, 1].")


def denoising(dataset: tf.data.Dataset, sequence_length, output_features, *, mask_id: int, mask_ratio: float = 0.3,
              poisson_lambda: float = 3.0, random_ratio: float = 0.0,
              permute_sentences: bool = True) -> tf.data.Dataset:
    """seqio preprocessor: documents as scalar strings in `targets` -> BART's denoising examples, int32
    `inputs` `[<= chunk]` (permuted and infilled) and `targets` `[chunk]` (the block, uncorrupted), where
    chunk is at most `sequence_length["targets"] - 1` (room for EOS; `sequence_length=None`: one block per
    document). It tokenizes itself (sentences are found in the text), so it follows `rekey` in a Task's
    preprocessors and `seqio.preprocessors.append_eos_after_trim` follows it (`preprocessors`). Other
    features are dropped. See the module docstring for the steps. The targets are the document's text but
    for whitespace: each sentence stripped, one space after each sentence end.

    Infilling never lengthens the inputs, so `inputs_length == targets_length` always fits.
    """
    inputs_vocab = output_features["inputs"].vocabulary
    _check(mask_id, inputs_vocab.vocab_size, mask_ratio, poisson_lambda, random_ratio)
    targets = output_features["targets"]
    tokens_length = None
    if sequence_length and sequence_length.get("targets"):
        tokens_length = sequence_length["targets"] - (1 if targets.add_eos else 0)
    dataset = document_blocks(dataset, targets.vocabulary, tokens_length)

    @seqio.map_over_dataset(num_seeds=1)
    def permute(example, seed):
        block = example["targets"]
        return {"inputs": sentence_permutation(block, seed) if permute_sentences else block, "targets": block}

    dataset = permute(dataset)
    dataset = seqio.preprocessors.tokenize(dataset, output_features, copy_pretokenized=False)
    dataset = split_long_blocks(dataset, tokens_length)
    random_vocab_size, special_ids = _random_token_range(inputs_vocab, mask_id)
    bos = getattr(inputs_vocab, "bos_id", None)   # BART's <s> opens every encoded block: never masked (fairseq)

    @seqio.map_over_dataset(num_seeds=1)
    def infill(example, seed):
        tokens = example["inputs"]
        opens = tf.reduce_any(tf.equal(tokens[:1], bos)) if isinstance(bos, int) and bos >= 0 else tf.constant(False)
        start = tf.cast(opens, tf.int32)
        inputs = text_infilling(tokens[start:], seed, mask_id=mask_id, mask_ratio=mask_ratio,
                                poisson_lambda=poisson_lambda, random_ratio=random_ratio,
                                random_vocab_size=random_vocab_size, special_ids=special_ids)
        return {"inputs": tf.concat([tokens[:start], inputs], 0), "targets": example["targets"]}

    return infill(dataset)


def preprocessors(*, mask_id: int, mask_ratio: float = 0.3, poisson_lambda: float = 3.0, random_ratio: float = 0.0,
                  permute_sentences: bool = True) -> list:
    """A Task's preprocessors over a source of {"text": document}: rekey, `denoising`, EOS."""
    return [
        functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
        functools.partial(denoising, mask_id=mask_id, mask_ratio=mask_ratio, poisson_lambda=poisson_lambda,
                          random_ratio=random_ratio, permute_sentences=permute_sentences),
        seqio.preprocessors.append_eos_after_trim,
    ]


def register_local_denoising(files: str | Sequence[str], vocab_path: str, *, mask_id: int | None = None,
                             file_format: str = "auto", text_field: str = "text", validation_files: int = 0,
                             mask_ratio: float = 0.3, poisson_lambda: float = 3.0, random_ratio: float = 0.0,
                             permute_sentences: bool = True, name: str | None = None,
                             max_line_chars: int = 1_000_000, extra_ids: int = 100) -> str:
    """Registers (once) a BART denoising Task over local files and returns its name; the sources are those
    of `tasks.pretraining.register_local_span_corruption` (formats, held-out files, sharding by file).

    `vocab_path`: a SentencePiece model (read with `extra_ids` sentinels) or a byte-level BPE tokenizer
    (`tasks.pretraining.vocabulary`). `mask_id=None`: the vocabulary's mask token (`mask_token_id`: BPE's
    `<mask>`, `<extra_id_0>` for SentencePiece).

    Raises:
      ConfigError: no file, an unknown format, too many validation files, a vocabulary without a mask
        token and no `mask_id`, or a parameter out of range.
    """
    paths = resolve_files(files) if isinstance(files, str) else sorted(files)
    if not paths:
        raise ConfigError("no readable corpus file remains; fix data.files.")
    formats = file_formats(paths, file_format)
    splits = split_files(paths, validation_files)
    vocab = vocabulary(vocab_path, extra_ids)
    mask_id = mask_token_id(vocab) if mask_id is None else int(mask_id)
    _check(mask_id, vocab.vocab_size, mask_ratio, poisson_lambda, random_ratio)
    key = json.dumps([paths, vocab_path, formats, text_field, validation_files, mask_id, mask_ratio,
                      poisson_lambda, random_ratio, permute_sentences, max_line_chars])
    name = name or "denoising_" + hashlib.sha1(key.encode()).hexdigest()[:12]
    features = {"inputs": seqio.Feature(vocab, add_eos=True), "targets": seqio.Feature(vocab, add_eos=True)}
    registry.add_task(
        name, [key, registry.vocabulary_key(vocab_path, vocab.extra_ids)],
        source=_FileList(make_reader(formats, text_field, max_line_chars, cloud=any(storage.is_cloud(p) for p in paths)),
                         split_to_filepattern=splits),
        preprocessors=preprocessors(mask_id=mask_id, mask_ratio=mask_ratio, poisson_lambda=poisson_lambda,
                                    random_ratio=random_ratio, permute_sentences=permute_sentences),
        output_features=features,
        metric_fns=[])
    return name
