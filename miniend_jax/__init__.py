"""miniend_jax: task-agnostic distillation of encoder-decoder language models (MiniEnD) in JAX/Flax."""

import os as _os

# etils `epath` (orbax's file layer) reaches object storage through fsspec, as `miniend_jax.files` does,
# not through `tf.io.gfile`: one backend for every library (see files.py). Set before any epath path is
# used (the choice is cached on first use).
_os.environ.setdefault("EPATH_USE_TF", "false")
# A GCS emulator (`STORAGE_EMULATOR_HOST`, gcsfs's setting) is where orbax's arrays go too (tensorstore
# reads its own setting), and it has no zonal buckets for gcsfs to ask Google's control API about (that
# request would wait for its timeout on every call). Set before gcsfs is imported.
if _os.environ.get("STORAGE_EMULATOR_HOST"):
    _os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", _os.environ["STORAGE_EMULATOR_HOST"])
    _os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
