"""TensorFlow as the input pipeline's runtime only: on the host CPU, and quiet.

Code that reads data imports TensorFlow as `from tasks.runtime import tf`, and imports this module before
seqio (which imports TensorFlow itself); importing it sets TensorFlow up once per process, as t5x and
big_vision do: TensorFlow sees no GPU (the accelerators belong to JAX; tf.data runs on the
host), its C++ log keeps errors only (`miniend_jax/console.py`), and what its
libraries print while loading and probing for CUDA ("Could not find cuda drivers", "failed call to cuInit",
the CPU-instruction and oneDNN notices) is dropped, unless the import fails, when it is printed with the
error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from miniend_jax.console import quiet_console


@contextlib.contextmanager
def _captured_stderr():
    """File descriptor 2 goes to a temporary file; its text is printed again if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow() -> None:
    """Imports TensorFlow on the host CPU without its start-up log (once per process; see the module
    docstring). If TensorFlow is already imported, only hides the GPUs from it."""
    if "tensorflow" not in sys.modules:
        with _captured_stderr():
            import tensorflow as tf
            tf.config.set_visible_devices([], "GPU")  # probes CUDA: inside the capture
        return
    import tensorflow as tf
    with contextlib.suppress(RuntimeError):  # devices already initialized: nothing to change
        tf.config.set_visible_devices([], "GPU")


quiet_console()
quiet_tensorflow()
import tensorflow as tf  # noqa: E402  (set up above)

__all__ = ["tf", "quiet_tensorflow"]
