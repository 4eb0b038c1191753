"""Every shipped config constructs, passes validation and is consistent with its models' shapes."""

import glob
import importlib.util
import os
import pathlib

import pytest

from miniend_jax.build import distill_spec, student_config, teacher_config
from miniend_jax.config_checks import validate_config
from tests.conftest import ROOT, SPIECE

CONFIGS = sorted(glob.glob(str(ROOT / "configs" / "**" / "*.py"), recursive=True))
# Config files define get_config (configs/experiments/common.py holds their shared settings).
CONFIGS = [c for c in CONFIGS
           if not c.endswith("__init__.py") and "def get_config" in pathlib.Path(c).read_text()]


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_is_valid_and_consistent(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    module = _load(path)
    assert module.__doc__ and "python -m miniend_jax.main" in module.__doc__ and "Expected" in module.__doc__
    config = module.get_config()
    if config.teacher.source != "preset":
        # External teachers are user paths; check the config against the shape it names.
        config.teacher.source = "preset"
        if config.teacher.path.endswith("t5-base"):
            config.teacher.preset = "t5-base"
    if not os.path.isfile(config.data.vocab):  # the demo trains its own vocabulary first
        config.data.vocab = str(SPIECE)
    if config.model.source != "preset":  # the checkpoint to finetune is a user path too
        config.model.source, config.model.preset = "preset", "t5-v1_1-small"
    validate_config(config)
    spec = distill_spec(config)
    student = student_config(config)
    teacher = teacher_config(config) if spec.needs_teacher else None
    spec.check_models(teacher, student)
