"""Loading a run's config as `python -m miniend_jax.main` does, for main itself and for the launcher
(which must not import JAX): the message a config file or `--config.<field>` override that cannot be
loaded gets, one line."""

from __future__ import annotations

from absl import flags


def load_error(error: Exception, argv: list[str]) -> str:
    """One line for an exception raised while absl parsed `argv` and ml_collections built the config.

    ml_collections raises KeyError, AttributeError, OSError or ValueError from inside absl's parser (which
    would print a traceback); an exception inside the config file's `get_config` arrives as a
    `flags.Error` holding that traceback.
    """
    if isinstance(error, flags.Error):
        text = str(error).strip()
        if "Traceback (most recent call last)" in text:
            text = f"flag --config: {text.splitlines()[-1]}"
        return f"{text} (`--help` lists the flags)"
    while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(message))
        error = error.args[0]
    message = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    given = " ".join(a for a in argv[1:] if a.startswith("--config"))
    return (f"the config could not be built from {given}: {message} (check the config file and the "
            "--config.<field> names against configs/base.py)")


LOAD_ERRORS = (flags.Error, KeyError, AttributeError, OSError, ValueError, TypeError)
