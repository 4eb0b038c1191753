"""`mode=export`: the newest checkpoint of a miniend workdir as a HF directory of its family."""

from __future__ import annotations

from miniend_jax import build, files
from miniend_jax.errors import ConfigError


def run(config, workdir: str) -> str:
    """Writes the newest checkpoint of `workdir` as a HF directory (`export.path`, default
    `<workdir>/hf_student`): `model.safetensors`, `config.json` and, unless `data.vocab=''`, the
    tokenizer (T5: `spiece.model` with `data.extra_ids` sentinels; BART: its byte-level BPE files), and
    the family's decoding defaults in `generation_config.json`. Every host restores; process 0 writes.

    Returns:
      The HF directory's path.

    Raises:
      ConfigError: `workdir` holds no checkpoint.
      CheckpointError: the checkpoint cannot be read.
    """
    import jax
    from miniend_jax.checkpoints.hf import save_hf_checkpoint
    from miniend_jax.checkpoints.state import read_meta
    from miniend_jax.models.registry import family_of
    try:
        read_meta(workdir)
    except FileNotFoundError:
        raise ConfigError(f"--workdir={workdir!r} holds no checkpoint to export; train first or fix the "
                          "path.") from None
    model_config, params, meta = build.restore_workdir(workdir)
    path = config.export.path or files.join(workdir, "hf_student")
    if jax.process_index() == 0:
        # The family's decoding defaults (BART's forced <s> and </s>, 3-gram blocking) go with the weights.
        save_hf_checkpoint(path, model_config, params, spiece_model=config.data.vocab or None,
                           extra_ids=config.data.extra_ids,
                           generation=family_of(model_config).generation_defaults(model_config))
        print(f"exported step {meta['step']} to {path}", flush=True)
    return path
