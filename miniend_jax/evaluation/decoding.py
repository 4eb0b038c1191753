"""Autoregressive decoding with the key/value cache: greedy and beam search, both jitted.

Greedy decoding follows PyTorch `transformers` `generate` exactly. Beam search follows one of two
references, chosen by `length_penalty_rule`: `"t5"`, t5x's `decoding.beam_search` (T5's own decoder, with
the brevity penalty `((5 + length) / 6) ** alpha`), or `"hf"`, `generate(num_beams=k)` (same scores and
stopping rules, so a checkpoint decodes to the same tokens here and there). The tests hold each to its
reference. `LogitsRules` are `generate`'s logits processors that checkpoints such as BART's ask for
(minimum length, n-gram blocking, forced first and last tokens), applied in both searches as HF applies them.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from miniend_jax.models.registry import decoding_model


@dataclasses.dataclass(frozen=True)
class LogitsRules:
    """`generate`'s logits processors, in pipeline ids (HF `generation/logits_process.py`).

    Attributes:
      min_length: HF `min_length` (`MinLengthLogitsProcessor`): EOS is banned while the sequence, decoder
        start token included, is shorter; 0 = none.
      no_repeat_ngram_size: n (`NoRepeatNGramLogitsProcessor`): a token that would repeat an n-gram of the
        sequence so far (start token included) is banned; 0 = none.
      forced_bos_token_id: the first generated token (`ForcedBOSTokenLogitsProcessor`); -1 = none.
      forced_eos_token_id: EOS forced as the last of `max_decode_length` tokens (`ForcedEOSTokenLogitsProcessor`
        with HF's `max_length = max_decode_length + 1`); -1 = none.
    """

    min_length: int = 0
    no_repeat_ngram_size: int = 0
    forced_bos_token_id: int = -1
    forced_eos_token_id: int = -1

    def apply(self, scores: jax.Array, history: jax.Array, position, max_decode_length: int,
              eos_token_id: int) -> jax.Array:
        """`scores` float32 `[rows, vocab]` for the token at `position`, with banned tokens set to -inf.

        Args:
          scores: next-token log-probabilities (beam search) or logits (greedy), as HF passes them.
          history: int32 `[rows, >= position + 1]`: the decoder start token, then the generated tokens.
          position: int32 scalar, the index of the token being chosen among the generated ones.
          max_decode_length: static, the number of tokens generated at most.
          eos_token_id: the model's EOS id.
        """
        length = position + 1   # HF's cur_len: the start token and the generated tokens
        vocab = jnp.arange(scores.shape[-1])
        if self.min_length > 0:
            scores = jnp.where((vocab == eos_token_id) & (length < self.min_length), -jnp.inf, scores)
        if self.no_repeat_ngram_size > 0:
            scores = jnp.where(_repeated_ngram_tokens(history, length, self.no_repeat_ngram_size, scores.shape[-1]),
                               -jnp.inf, scores)
        for token, at in ((self.forced_bos_token_id, position == 0),
                          (self.forced_eos_token_id, position == max_decode_length - 1)):
            if token >= 0:
                scores = jnp.where(at, jnp.where(vocab == token, 0.0, -jnp.inf), scores)
        return scores


NO_RULES = LogitsRules()


def _repeated_ngram_tokens(history: jax.Array, length, n: int, vocab: int) -> jax.Array:
    """bool `[rows, vocab]`: the tokens that would complete an n-gram already in `history[:, :length]`
    (HF `_calc_banned_ngram_tokens`: every earlier n-gram whose first n-1 tokens equal the last n-1)."""
    rows, size = history.shape
    starts = np.arange(max(size - n + 1, 0))
    if not len(starts):
        return jnp.zeros((rows, vocab), bool)
    windows = history[:, starts[:, None] + np.arange(n)[None, :]]              # [rows, W, n]
    last = jax.lax.dynamic_slice_in_dim(history, jnp.maximum(length - n + 1, 0), n - 1, axis=1)  # [rows, n-1]
    match = jnp.all(windows[:, :, :-1] == last[:, None, :], axis=-1) & (starts[None, :] <= length - n)
    banned = jnp.zeros((rows, vocab), jnp.int32).at[jnp.arange(rows)[:, None], windows[:, :, -1]].add(match)
    return banned > 0


def _decoder_step(model: nn.Module, params, encoder_input_tokens: jax.Array, max_decode_length: int,
                  repeat: int = 1):
    """Encodes once; returns `step(cache, tokens [rows], position) -> (float32 logits [rows, vocab], cache)`
    over the encoder output repeated `repeat` times per example (one row per beam)."""
    model, to_params = decoding_model(model.config)  # the key/value cache is per layer: unrolled layout
    params = to_params(params)
    variables = {"params": params}
    encoded, _ = model.apply(variables, encoder_input_tokens, method="encode")
    if repeat > 1:
        encoded = jnp.repeat(encoded, repeat, axis=0)
        encoder_input_tokens = jnp.repeat(encoder_input_tokens, repeat, axis=0)

    def step(cache, tokens, position):
        state = dict(variables, cache=cache) if cache is not None else variables
        (logits, _, _), updated = model.apply(
            state, encoded, encoder_input_tokens, tokens[:, None], decode=True, decode_position=position,
            max_decode_length=max_decode_length, method="decode", mutable=["cache"])
        return logits[:, 0].astype(jnp.float32), updated["cache"]

    return step


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length", "return_scores", "rules"))
def greedy_decode(model: nn.Module, params, encoder_input_tokens: jax.Array, max_decode_length: int,
                  return_scores: bool = False, rules: LogitsRules = NO_RULES):
    """Greedy decoding, as HF `generate(num_beams=1, do_sample=False)` does it.

    Args:
      model: the model's module, any family (static: hashed by its config); either layout, decoding runs
        unrolled.
      params: its (unboxed) parameters, in the layout `model.config.scan_layers` names.
      encoder_input_tokens: int `[batch, enc_len]`, 0 = padding.
      max_decode_length: number of tokens to generate (HF `max_new_tokens`), static.
      return_scores: also return each hypothesis's log-probability, static.
      rules: `generate`'s logits processors to apply (static); default none.

    Returns:
      int32 `[batch, max_decode_length]`: generated tokens without the start token; after a sequence's
      EOS every position holds the pad id. Stops early once every sequence has ended. With
      `return_scores`, also float32 `[batch]`: the natural-log probability of the generated tokens up to
      and including EOS (the sum of HF's `compute_transition_scores(..., normalize_logits=True)` over them,
      i.e. of the processed logits).
    """
    cfg = model.config
    batch = encoder_input_tokens.shape[0]
    step = _decoder_step(model, params, encoder_input_tokens, max_decode_length)
    start = jnp.full((batch,), cfg.decoder_start_token_id, jnp.int32)

    def choose(logits, done, score, output, position):
        history = jnp.concatenate([start[:, None], output], axis=1)
        logits = rules.apply(logits, history, position, max_decode_length, cfg.eos_token_id)
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=-1)[:, 0]
        score = score + jnp.where(done, 0.0, log_prob)
        token = jnp.where(done, cfg.pad_token_id, token)
        return token, done | (token == cfg.eos_token_id), score

    # The first step builds the cache (self-attention buffers, cross-attention keys/values).
    logits, cache = step(None, start, 0)
    output = jnp.full((batch, max_decode_length), cfg.pad_token_id, jnp.int32)
    token, done, score = choose(logits, jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.float32), output, 0)
    output = output.at[:, 0].set(token)

    def cond(state):
        position, _, _, done, _ = state
        return (position < max_decode_length) & ~jnp.all(done)

    def body(state):
        position, output, cache, done, score = state
        logits, cache = step(cache, output[:, position - 1], position)
        token, done, score = choose(logits, done, score, output, position)
        return position + 1, output.at[:, position].set(token), cache, done, score

    _, output, _, _, score = jax.lax.while_loop(cond, body, (jnp.int32(1), output, cache, done, score))
    return (output, score) if return_scores else output


_NEG = -1.0e9  # the masking constant `generate` uses, kept so that ties and orderings agree with it
_T5X_NEG = -1.0e7  # t5x's NEG_INF, kept for the same reason

LENGTH_PENALTY_RULES = ("t5", "hf")
CONFIG_LENGTH_PENALTY_RULES = LENGTH_PENALTY_RULES + ("auto",)   # auto: see `build.decode_settings`


def length_penalty_divisor(rule: str, length_penalty: float, length):
    """What a finished hypothesis's summed log-probability is divided by.

    Args:
      rule: `"t5"`: the brevity penalty `((5 + length) / 6) ** length_penalty` of Wu et al. 2016 (Google's
        NMT, eq. 14) as T5 decodes with it (t5x `decoding.py`, `brevity_penalty`); `"hf"`:
        `length ** length_penalty` (`transformers` `BeamHypotheses.add`).
      length_penalty: the exponent alpha (T5: 0.6; HF's default: 1.0).
      length: the generated tokens, EOS included (int or array).

    Returns:
      float32, the shape of `length`.

    Raises:
      ValueError: `rule` is not one of `LENGTH_PENALTY_RULES`.
    """
    length = jnp.asarray(length, jnp.float32)
    if rule == "t5":
        return ((5.0 + length) / 6.0) ** length_penalty
    if rule == "hf":
        return length ** length_penalty
    raise ValueError(f"length_penalty_rule={rule!r}: use one of {', '.join(LENGTH_PENALTY_RULES)}.")


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length", "num_beams", "length_penalty_rule",
                                             "early_stopping", "return_scores", "rules"))
def beam_search(model: nn.Module, params, encoder_input_tokens: jax.Array, max_decode_length: int, num_beams: int = 4,
                length_penalty: float = 0.6, length_penalty_rule: str = "t5", early_stopping: bool = False,
                return_scores: bool = False, rules: LogitsRules = NO_RULES):
    """Beam search with the key/value cache, as t5x (`length_penalty_rule="t5"`) or HF `generate`
    (`"hf"`) does it.

    Both keep the 2k best continuations over all beams by summed log-probability at each step; the k best
    that did not end keep running. They differ in what finishes and when the search stops:

    - `"t5"` (t5x `decoding.py` `beam_search`): every one of the 2k candidates that ends with EOS may
      join the k finished hypotheses, scored `sum_logprob / ((5 + n) / 6) ** length_penalty` with n the
      generated tokens including EOS; a beam that reaches `max_decode_length` without EOS does not finish.
      The search stops at `max_decode_length` or once every finished slot of every example beats the best
      running beam's log-probability divided by the largest brevity penalty. If an example has no
      finished hypothesis, its best running beam is returned with its plain log-probability.
    - `"hf"` (`transformers` `generation/utils.py`, `_beam_search` and its beam-score bookkeeping):
      among the k best candidates, those that end (EOS, or the length limit) may join the finished
      hypotheses, scored `sum_logprob / n ** length_penalty`. The search stops when no running beam can
      beat the worst finished hypothesis by HF's heuristic (`early_stopping=False`), when every beam slot
      is finished (`early_stopping=True`), or at `max_decode_length`.

    Args:
      model: the model's module (static); params: its (unboxed) parameters, as for `greedy_decode`.
      encoder_input_tokens: int `[batch, enc_len]`, 0 = padding.
      max_decode_length: maximum tokens to generate (HF `max_new_tokens`), static.
      num_beams: k, static.
      length_penalty: the exponent alpha of the length penalty (see `length_penalty_divisor`).
      length_penalty_rule: `"t5"` or `"hf"`, as above, static.
      early_stopping: HF's `early_stopping` (True or False; HF's "never" is not offered); `"hf"` only,
        static.
      return_scores: also return the best hypothesis's score, static.
      rules: `generate`'s logits processors, applied to each beam's log-probabilities (static).

    Returns:
      int32 `[batch, max_decode_length]`: each example's best hypothesis, pad id after its EOS. With
      `return_scores`, also float32 `[batch]`: its score, `sum_logprob / length_penalty_divisor(...)` (for
      `"hf"`, HF's `sequences_scores`; for `"t5"`, t5x's beam score, the plain log-probability where no
      hypothesis reached EOS).

    Raises:
      ValueError: an unknown `length_penalty_rule`, or `early_stopping` with the `"t5"` rule.
    """
    if length_penalty_rule not in LENGTH_PENALTY_RULES:
        raise ValueError(f"length_penalty_rule={length_penalty_rule!r}: use one of "
                         f"{', '.join(LENGTH_PENALTY_RULES)}.")
    if length_penalty_rule == "t5" and early_stopping:
        raise ValueError("early_stopping=True is HF's option; t5x's beam search has none: use "
                         "length_penalty_rule='hf' or early_stopping=False.")
    step = _decoder_step(model, params, encoder_input_tokens, max_decode_length, repeat=num_beams)
    search = _t5x_beam_search if length_penalty_rule == "t5" else _hf_beam_search
    tokens, scores = search(model.config, step, encoder_input_tokens.shape[0], num_beams, max_decode_length,
                            length_penalty, early_stopping, rules)
    return (tokens, scores) if return_scores else tokens


def _gather(x, index):
    """`x[b, index[b, j], ...]`: [batch, n, ...] -> [batch, m, ...] for `index` [batch, m]."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _reorder_cache(cache, parent, batch: int, k: int):
    """Each cache row follows its beam's parent (`parent` [batch, k], beam indices)."""
    rows = (parent + jnp.arange(batch)[:, None] * k).reshape(-1)
    return jax.tree.map(lambda x: x[rows] if x.ndim and x.shape[0] == batch * k else x, cache)


def _expand(cfg, step, cache, beams, beam_scores, position, batch: int, k: int, keep: int, rules: LogitsRules):
    """One step of both searches: each beam's next-token log-probabilities (after `rules`) added to its
    score, and the `keep` best continuations of all `k` beams: `(scores [batch, keep], parent beam, token,
    candidate sequences [batch, keep, length], cache)`."""
    previous = jnp.where(position == 0, cfg.decoder_start_token_id, beams[:, :, jnp.maximum(position - 1, 0)])
    logits, cache = step(cache, previous.reshape(-1), position)
    length = beams.shape[-1]
    history = jnp.concatenate([jnp.full((batch * k, 1), cfg.decoder_start_token_id, jnp.int32),
                               beams.reshape(batch * k, length)], axis=1)
    log_probs = rules.apply(jax.nn.log_softmax(logits), history, position, length, cfg.eos_token_id)
    log_probs = log_probs.reshape(batch, k, -1) + beam_scores[:, :, None]
    vocab = log_probs.shape[-1]
    top_scores, top_index = jax.lax.top_k(log_probs.reshape(batch, k * vocab), keep)
    parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
    return top_scores, parent, token, _gather(beams, parent).at[:, :, position].set(token), cache


def _merge_finished(finished_seqs, finished_scores, finished, candidates, scores, ended, k: int):
    """The `k` best of the finished hypotheses and the candidates (`scores`, masked where not `ended`)."""
    merged_scores = jnp.concatenate([finished_scores, scores], axis=1)
    _, chosen = jax.lax.top_k(merged_scores, k)
    return (_gather(jnp.concatenate([finished_seqs, candidates], axis=1), chosen), _gather(merged_scores, chosen),
            _gather(jnp.concatenate([finished, ended], axis=1), chosen))


def _run(search_step, state):
    state, go_on = search_step(state)  # the first step builds the cache

    def body(carry):
        state, _ = carry
        return search_step(state)

    state, _ = jax.lax.while_loop(lambda carry: carry[1], body, (state, go_on))
    return state


def _t5x_beam_search(cfg, step, batch: int, k: int, length: int, length_penalty: float, early_stopping: bool,
                     rules: LogitsRules):
    """t5x's `beam_search` (see `beam_search`): `(tokens [batch, length], scores [batch])`."""
    del early_stopping
    keep = 2 * k
    penalty = lambda n: length_penalty_divisor("t5", length_penalty, n)

    def search_step(state):
        position, live, live_scores, finished_seqs, finished_scores, finished, cache = state
        top_scores, parent, token, candidates, cache = _expand(cfg, step, cache, live, live_scores, position,
                                                               batch, k, keep, rules)
        eos = token == cfg.eos_token_id

        # The k best candidates without EOS stay live (whatever their length).
        live_candidate_scores = top_scores + eos * _T5X_NEG
        _, best = jax.lax.top_k(live_candidate_scores, k)
        live, live_scores = _gather(candidates, best), _gather(live_candidate_scores, best)
        cache = _reorder_cache(cache, _gather(parent, best), batch, k)

        # Every one of the 2k candidates that ends with EOS may replace a worse finished hypothesis.
        scores = top_scores / penalty(position + 1) + ~eos * _T5X_NEG
        finished_seqs, finished_scores, finished = _merge_finished(finished_seqs, finished_scores, finished,
                                                                   candidates, scores, eos, k)

        # t5x's stopping test, over the whole batch, with its bound: the largest penalty t5x divides by,
        # that of its internal length (max_decode_length + 1).
        best_possible = live_scores[:, :1] / penalty(length + 1)
        worst_finished = jnp.where(finished, jnp.min(finished_scores, axis=1, keepdims=True), _T5X_NEG)
        go_on = (position + 1 < length) & ~jnp.all(worst_finished > best_possible)
        return (position + 1, live, live_scores, finished_seqs, finished_scores, finished, cache), go_on

    empty = jnp.full((batch, k, length), cfg.pad_token_id, jnp.int32)
    live_scores = jnp.zeros((batch, k), jnp.float32).at[:, 1:].set(_T5X_NEG)  # only beam 0 starts
    state = (jnp.int32(0), empty, live_scores, empty, jnp.full((batch, k), _T5X_NEG, jnp.float32),
             jnp.zeros((batch, k), bool), None)
    _, live, live_scores, finished_seqs, finished_scores, finished, _ = _run(search_step, state)
    any_finished = jnp.any(finished, axis=1)
    tokens = jnp.where(any_finished[:, None], finished_seqs[:, 0], live[:, 0])
    return tokens, jnp.where(any_finished, finished_scores[:, 0], live_scores[:, 0])


def _hf_beam_search(cfg, step, batch: int, k: int, length: int, length_penalty: float, early_stopping: bool,
                    rules: LogitsRules):
    """`generate(num_beams=k)`'s beam search (see `beam_search`): `(tokens [batch, length], scores [batch])`."""
    keep = 2 * k                                         # one EOS id: max(2, 1 + 1) * k candidates
    penalised = lambda scores, generated: scores / length_penalty_divisor("hf", length_penalty, generated)

    def search_step(state):
        position, running, running_scores, finished_seqs, finished_scores, finished, improvable, cache = state
        top_scores, parent, token, candidates, cache = _expand(cfg, step, cache, running, running_scores, position,
                                                               batch, k, keep, rules)
        ends = (token == cfg.eos_token_id) | (position + 1 >= length)

        # The k best candidates that did not end keep running.
        running_candidate_scores = top_scores + ends * _NEG
        _, best = jax.lax.top_k(running_candidate_scores, k)
        running, running_scores = _gather(candidates, best), _gather(running_candidate_scores, best)
        cache = _reorder_cache(cache, _gather(parent, best), batch, k)

        # Among the k best candidates, those that ended may replace worse finished hypotheses.
        just_finished = ends & (jnp.arange(keep) < k)[None, :]
        scores = penalised(top_scores, position + 1)
        if early_stopping:
            scores += jnp.all(finished, axis=-1, keepdims=True) * _NEG
        scores += ~improvable * _NEG
        scores += ~just_finished * _NEG
        finished_seqs, finished_scores, finished = _merge_finished(finished_seqs, finished_scores, finished,
                                                                   candidates, scores, just_finished, k)

        best_possible = penalised(running_scores[:, :1], position + 1)
        worst_finished = jnp.where(finished, jnp.min(finished_scores, axis=1, keepdims=True), _NEG)
        improvable = improvable & jnp.any(best_possible > worst_finished, axis=-1, keepdims=True)
        go_on = jnp.any(improvable) & ~jnp.all(ends)
        if early_stopping:
            go_on &= ~jnp.all(finished)
        return (position + 1, running, running_scores, finished_seqs, finished_scores, finished, improvable,
                cache), go_on

    empty = jnp.full((batch, k, length), cfg.pad_token_id, jnp.int32)
    initial_scores = jnp.zeros((batch, k), jnp.float32).at[:, 1:].set(_NEG)  # only beam 0 starts
    state = (jnp.int32(0), empty, initial_scores, empty, jnp.full((batch, k), _NEG, jnp.float32),
             jnp.zeros((batch, k), bool), jnp.ones((batch, 1), bool), None)
    _, _, _, finished_seqs, finished_scores, _, _, _ = _run(search_step, state)
    return finished_seqs[:, 0], finished_scores[:, 0]
