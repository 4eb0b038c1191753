"""Autoregressive decoding with the key/value cache."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from miniend_jax.models.t5 import T5


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length"))
def greedy_decode(model: T5, params, encoder_input_tokens: jax.Array, max_decode_length: int) -> jax.Array:
    """Greedy decoding, as HF `generate(num_beams=1, do_sample=False)` does it.

    Args:
      model: the `T5` module; params: its (unboxed) parameters.
      encoder_input_tokens: int `[batch, enc_len]`, 0 = padding.
      max_decode_length: number of tokens to generate (HF `max_new_tokens`).
    Returns:
      int `[batch, max_decode_length]`: generated tokens without the start token; after a sequence's
      EOS every position holds the pad id. Stops early once every sequence has ended.
    """
    cfg = model.config
    batch = encoder_input_tokens.shape[0]
    variables = {"params": params}
    encoded, _ = model.apply(variables, encoder_input_tokens, method=T5.encode)

    def step(cache, tokens, position):
        """Logits of the token after `tokens` (at `position`) and the updated cache."""
        state = dict(variables, cache=cache) if cache is not None else variables
        (logits, _, _), updated = model.apply(
            state, encoded, encoder_input_tokens, tokens[:, None], decode=True, decode_position=position,
            max_decode_length=max_decode_length, method=T5.decode, mutable=["cache"])
        return logits[:, 0], updated["cache"]

    def choose(logits, done):
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        token = jnp.where(done, cfg.pad_token_id, token)
        return token, done | (token == cfg.eos_token_id)

    # The first step builds the cache (self-attention buffers, cross-attention keys/values).
    start = jnp.full((batch,), cfg.decoder_start_token_id, jnp.int32)
    logits, cache = step(None, start, 0)
    token, done = choose(logits, jnp.zeros((batch,), bool))
    output = jnp.full((batch, max_decode_length), cfg.pad_token_id, jnp.int32).at[:, 0].set(token)

    def cond(state):
        position, _, _, done = state
        return (position < max_decode_length) & ~jnp.all(done)

    def body(state):
        position, output, cache, done = state
        logits, cache = step(cache, output[:, position - 1], position)
        token, done = choose(logits, done)
        return position + 1, output.at[:, position].set(token), cache, done

    _, output, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), output, cache, done))
    return output
