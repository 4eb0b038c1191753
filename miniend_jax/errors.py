"""Project exceptions: every message names what was wrong and how to fix it."""


class MiniEndError(Exception):
    """Base class of the errors miniend_jax raises for bad input."""


class ConfigError(MiniEndError, ValueError):
    """A configuration value is invalid or inconsistent with another."""


class CheckpointError(MiniEndError, ValueError):
    """A checkpoint directory is missing, incomplete, or does not match the expected model."""


class TrainingError(MiniEndError, RuntimeError):
    """Training cannot continue (e.g. repeated non-finite losses); the last good checkpoint is kept."""


class EvaluationInterrupted(Exception):
    """A stop request (SIGTERM / SIGINT) arrived during an evaluation, which stopped after `done` of `total`
    `unit`s; the training loop checkpoints and exits, and the evaluation runs again on resume. Not bad
    input: it never reaches the user as an error."""

    def __init__(self, done: int, total: int, unit: str = "batches"):
        super().__init__(f"after {done} of {total} {unit}")
        self.done, self.total = done, total


def check(condition: bool, field: str, value, fix: str) -> None:
    """Raises `ConfigError("<field>=<value>: <fix>")` unless `condition` holds.

    Raises:
      ConfigError: `condition` is false.
    """
    if not condition:
        raise ConfigError(f"{field}={value!r}: {fix}")
