"""`make demo`: the smallest end-to-end run the package can do today, offline, in under a minute.

It builds a T5 v1.1-shaped model with random weights, runs a teacher-forced pass returning the
attention taps MiniEnD distils, exports the model as a HF `transformers` checkpoint, reloads it,
checks the round trip is exact, and decodes greedily with the key/value cache. The distillation demo
(teacher pretraining, MiniEnD student, from-scratch baseline) replaces this once the training pipeline
lands.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from miniend_jax.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from miniend_jax.evaluation.decoding import greedy_decode
from miniend_jax.models import T5, Taps, get_preset, init_params

SPIECE_CANDIDATES = ("../shared/data/t5_spiece/spiece.model",)


def main() -> int:
    start = time.time()
    print("miniend_jax demo (interim: model, taps, HF export/import, cached greedy decoding).")
    config = get_preset("t5-v1_1-small", num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))
    count = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"model: t5-v1_1-small shape, 2+2 layers, {count / 1e6:.1f}M parameters (random weights)")

    rng = np.random.default_rng(0)
    enc = rng.integers(2, 32000, (2, 16)).astype(np.int32)
    enc[1, 10:] = 0
    dec = np.concatenate([np.zeros((2, 1), np.int32), rng.integers(2, 32000, (2, 7))], 1).astype(np.int32)
    taps = Taps(encoder_self=(-1,), decoder_self=(-1,), cross=(-1,))
    out = jax.jit(lambda p: T5(config).apply({"params": p}, enc, dec, taps=taps))(params)
    print(f"forward: logits {tuple(out.logits.shape)}; taps of the last layer:")
    for kind, layers in out.taps.items():
        q, k, v = layers[-1]
        print(f"  {kind:13s} q {tuple(q.shape)}  k {tuple(k.shape)}  v {tuple(v.shape)}")

    spiece = next((p for p in SPIECE_CANDIDATES if os.path.exists(p)), None)
    with tempfile.TemporaryDirectory() as directory:
        save_hf_checkpoint(directory, config, params, spiece_model=spiece)
        print(f"exported HF checkpoint: {', '.join(sorted(os.listdir(directory)))}")
        config2, params2 = load_hf_checkpoint(directory)
    same = config2 == config and all(
        np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params2)))
    print(f"reloaded: config and parameters identical = {same}")

    tokens = greedy_decode(T5(config), params2, jnp.asarray(enc), 8)
    print(f"greedy decoding (random weights, so arbitrary ids): {np.asarray(tokens)[0].tolist()}")
    print(f"done in {time.time() - start:.1f}s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
