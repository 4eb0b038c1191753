"""miniend_jax: task-agnostic distillation of encoder-decoder language models (MiniEnD) in JAX/Flax."""

import os as _os

# etils `epath` (orbax's file layer) reaches object storage through fsspec, as `miniend_jax.files` does,
# not through `tf.io.gfile`: one backend and one endpoint setting for every library (see files.py).
# Set before any epath path is used (the choice is cached on first use).
_os.environ.setdefault("EPATH_USE_TF", "false")
