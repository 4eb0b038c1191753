"""One module per mode, each with one public `run(config, workdir)`; `run` below dispatches on
`config.mode` after checking the config.

| mode       | module               | writes to the workdir                                          |
|------------|----------------------|----------------------------------------------------------------|
| `distill`  | `modes/distill.py`   | config.json, checkpoints, metrics.jsonl (hf_student: at_end)   |
| `pretrain` | `modes/distill.py`   | the same, without a teacher                                    |
| `finetune` | `modes/finetune.py`  | the same, best/, best.json, results.json/.md, inference_eval/  |
| `evaluate` | `modes/evaluate.py`  | results.json, results.md, inference_eval/ (seqio's logs)       |
| `infer`    | `modes/infer.py`     | predictions.jsonl (or infer.output)                            |
| `export`   | `modes/export.py`    | hf_student/ (or export.path)                                   |
| `plan`     | `modes/plan.py`      | plan.json                                                      |
"""

from __future__ import annotations

import importlib

from miniend_jax import files
from miniend_jax.config_checks import validate_config
from miniend_jax.errors import ConfigError

_OUTPUT_FIELDS = ("infer.output", "export.path", "jax_cache_dir")  # written, not only read

_MODULES = {"distill": "distill", "pretrain": "distill", "finetune": "finetune", "evaluate": "evaluate",
            "infer": "infer", "export": "export", "plan": "plan"}


def run(config, workdir: str):
    """Checks `config` and runs its mode in `workdir`.

    Returns:
      What the mode returns: the final `TrainState` (distill, pretrain, finetune), the results payload
      (evaluate), the predictions file (infer), the HF directory (export) or the `Plan` (plan).

    Raises:
      ConfigError: no workdir, or a config value is wrong (before anything is read or written).
      MiniEndError: whatever the mode raises for bad input.
    """
    if not workdir:
        raise ConfigError("--workdir is required: the directory for checkpoints, metrics and the config.")
    workdir = files.absolute(workdir)  # `~` expanded where local
    check_storage(config, workdir)
    validate_config(config)
    if config.get("jax_cache_dir"):
        import jax
        jax.config.update("jax_compilation_cache_dir", files.absolute(config.jax_cache_dir))
    if config.mode != "plan":  # a plan compiles for simulated devices; every other mode may be multi-host
        from miniend_jax.parallel import initialize_distributed
        initialize_distributed(config)
    return importlib.import_module(f"miniend_jax.modes.{_MODULES[config.mode]}").run(config, workdir)


def check_storage(config, workdir: str) -> None:
    """Every cloud path of the run (the workdir and each `gs://` value of the config) is reachable, in an
    existing bucket, and writable where the run writes (`files.check_cloud_path`): a run stopped by storage
    stops here, in seconds, not after the client's retries or a compile.

    Raises:
      ConfigError: naming the field, the path and the fix.
    """
    paths = {"workdir": workdir}
    if config.mode != "plan":  # a plan reads nothing from storage (often made offline): its workdir only
        paths.update(files.cloud_strings(config.to_dict()))
    for field, path in paths.items():
        files.check_cloud_path(path, field, write=field == "workdir" or field in _OUTPUT_FIELDS)
