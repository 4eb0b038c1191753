"""Autoregressive decoding with the key/value cache: greedy and beam search, both jitted.

Both follow PyTorch `transformers` `generate` exactly (same scores, same stopping rules), so a checkpoint
decodes to the same tokens here and there; the tests hold both to that.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from miniend_jax.models.t5 import T5, unstack_layers


def _decoder_step(model: T5, params, encoder_input_tokens: jax.Array, max_decode_length: int, repeat: int = 1):
    """Encodes once; returns `step(cache, tokens [rows], position) -> (float32 logits [rows, vocab], cache)`
    over the encoder output repeated `repeat` times per example (one row per beam)."""
    if model.config.scan_layers:  # the key/value cache is per layer: decode in the unrolled layout
        model, params = T5(model.config.replace(scan_layers=False)), unstack_layers(params)
    variables = {"params": params}
    encoded, _ = model.apply(variables, encoder_input_tokens, method=T5.encode)
    if repeat > 1:
        encoded = jnp.repeat(encoded, repeat, axis=0)
        encoder_input_tokens = jnp.repeat(encoder_input_tokens, repeat, axis=0)

    def step(cache, tokens, position):
        state = dict(variables, cache=cache) if cache is not None else variables
        (logits, _, _), updated = model.apply(
            state, encoded, encoder_input_tokens, tokens[:, None], decode=True, decode_position=position,
            max_decode_length=max_decode_length, method=T5.decode, mutable=["cache"])
        return logits[:, 0].astype(jnp.float32), updated["cache"]

    return step


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length", "return_scores"))
def greedy_decode(model: T5, params, encoder_input_tokens: jax.Array, max_decode_length: int,
                  return_scores: bool = False):
    """Greedy decoding, as HF `generate(num_beams=1, do_sample=False)` does it.

    Args:
      model: the `T5` module (static: hashed by its config); either layout, decoding runs unrolled.
      params: its (unboxed) parameters, in the layout `model.config.scan_layers` names.
      encoder_input_tokens: int `[batch, enc_len]`, 0 = padding.
      max_decode_length: number of tokens to generate (HF `max_new_tokens`), static.
      return_scores: also return each hypothesis's log-probability, static.

    Returns:
      int32 `[batch, max_decode_length]`: generated tokens without the start token; after a sequence's
      EOS every position holds the pad id. Stops early once every sequence has ended. With
      `return_scores`, also float32 `[batch]`: the natural-log probability of the generated tokens up to
      and including EOS (the sum of HF's `compute_transition_scores(..., normalize_logits=True)` over them).
    """
    cfg = model.config
    batch = encoder_input_tokens.shape[0]
    step = _decoder_step(model, params, encoder_input_tokens, max_decode_length)

    def choose(logits, done, score):
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=-1)[:, 0]
        score = score + jnp.where(done, 0.0, log_prob)
        token = jnp.where(done, cfg.pad_token_id, token)
        return token, done | (token == cfg.eos_token_id), score

    # The first step builds the cache (self-attention buffers, cross-attention keys/values).
    start = jnp.full((batch,), cfg.decoder_start_token_id, jnp.int32)
    logits, cache = step(None, start, 0)
    token, done, score = choose(logits, jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.float32))
    output = jnp.full((batch, max_decode_length), cfg.pad_token_id, jnp.int32).at[:, 0].set(token)

    def cond(state):
        position, _, _, done, _ = state
        return (position < max_decode_length) & ~jnp.all(done)

    def body(state):
        position, output, cache, done, score = state
        logits, cache = step(cache, output[:, position - 1], position)
        token, done, score = choose(logits, done, score)
        return position + 1, output.at[:, position].set(token), cache, done, score

    _, output, _, _, score = jax.lax.while_loop(cond, body, (jnp.int32(1), output, cache, done, score))
    return (output, score) if return_scores else output


_NEG = -1.0e9  # the masking constant `generate` uses, kept so that ties and orderings agree with it


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length", "num_beams", "early_stopping",
                                             "return_scores"))
def beam_search(model: T5, params, encoder_input_tokens: jax.Array, max_decode_length: int, num_beams: int = 4,
                length_penalty: float = 1.0, early_stopping: bool = False, return_scores: bool = False):
    """Beam search with the key/value cache, as HF `generate(num_beams=k)` does it.

    At each step the 2k best continuations over all beams are scored by their summed log-probability;
    continuations that end (EOS, or the length limit) join the finished hypotheses with score
    `sum_logprob / generated_length ** length_penalty` if they are among the k best, and the k best
    unfinished ones continue. The search stops when no running beam can beat the worst finished
    hypothesis (HF's heuristic with `early_stopping=False`), when every beam slot is finished
    (`early_stopping=True`), or at `max_decode_length`.

    Source: HF `transformers` `generation/utils.py` (`_beam_search`, its beam-score bookkeeping).

    Args:
      model: the `T5` module (static); params: its (unboxed) parameters, as for `greedy_decode`.
      encoder_input_tokens: int `[batch, enc_len]`, 0 = padding.
      max_decode_length: maximum tokens to generate (HF `max_new_tokens`), static.
      num_beams: k, static.
      length_penalty: exponent of the generated length dividing a finished hypothesis's score.
      early_stopping: HF's `early_stopping` (True or False; HF's "never" is not offered), static.
      return_scores: also return the best hypothesis's score, static.

    Returns:
      int32 `[batch, max_decode_length]`: each example's best hypothesis, pad id after its EOS. With
      `return_scores`, also float32 `[batch]`: its score `sum_logprob / generated_length ** length_penalty`
      (HF's `sequences_scores`).
    """
    cfg = model.config
    batch, k = encoder_input_tokens.shape[0], num_beams
    keep = 2 * k                                         # one EOS id: max(2, 1 + 1) * k candidates
    length = max_decode_length
    step = _decoder_step(model, params, encoder_input_tokens, length, repeat=k)
    gather = lambda x, index: jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)
    penalised = lambda scores, generated: scores / (jnp.float32(generated) ** length_penalty)

    def search_step(state):
        position, running, running_scores, finished_seqs, finished_scores, finished, improvable, cache = state
        previous = jnp.where(position == 0, cfg.decoder_start_token_id,
                             running[:, :, jnp.maximum(position - 1, 0)])
        logits, cache = step(cache, previous.reshape(-1), position)
        log_probs = jax.nn.log_softmax(logits).reshape(batch, k, -1) + running_scores[:, :, None]
        vocab = log_probs.shape[-1]
        top_scores, top_index = jax.lax.top_k(log_probs.reshape(batch, k * vocab), keep)
        parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        candidates = gather(running, parent).at[:, :, position].set(token)
        ends = (token == cfg.eos_token_id) | (position + 1 >= length)

        # The k best candidates that did not end keep running.
        running_candidate_scores = top_scores + ends * _NEG
        _, best = jax.lax.top_k(running_candidate_scores, k)
        running, running_scores = gather(candidates, best), gather(running_candidate_scores, best)
        running_parent = gather(parent, best)

        # Among the k best candidates, those that ended may replace worse finished hypotheses.
        just_finished = ends & (jnp.arange(keep) < k)[None, :]
        scores = penalised(top_scores, position + 1)
        if early_stopping:
            scores += jnp.all(finished, axis=-1, keepdims=True) * _NEG
        scores += ~improvable * _NEG
        scores += ~just_finished * _NEG
        merged_scores = jnp.concatenate([finished_scores, scores], axis=1)
        _, chosen = jax.lax.top_k(merged_scores, k)
        finished_seqs = gather(jnp.concatenate([finished_seqs, candidates], axis=1), chosen)
        finished_scores = gather(merged_scores, chosen)
        finished = gather(jnp.concatenate([finished, just_finished], axis=1), chosen)

        # Each cache row follows its beam's parent.
        rows = (running_parent + jnp.arange(batch)[:, None] * k).reshape(-1)
        cache = jax.tree.map(lambda x: x[rows] if x.ndim and x.shape[0] == batch * k else x, cache)

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
    state, go_on = search_step(state)  # the first step builds the cache

    def body(carry):
        state, _ = carry
        return search_step(state)

    (_, _, _, finished_seqs, finished_scores, _, _, _), _ = jax.lax.while_loop(lambda carry: carry[1], body,
                                                                               (state, go_on))
    return (finished_seqs[:, 0], finished_scores[:, 0]) if return_scores else finished_seqs[:, 0]
