"""Every shipped config constructs, passes validation and is consistent with its models' shapes; the small CPU
config distills for 30 steps."""

import glob
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
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
    assert module.__doc__ and "Expected" in module.__doc__
    # Its command (tests/test_launch.py checks that the launcher accepts it): a run here, or on a pod.
    assert "python -m miniend_jax.main" in module.__doc__ or "python -m miniend_jax.launch" in module.__doc__
    config = module.get_config()
    if config.teacher.source != "preset":
        # External teachers are user paths; check the config against the shape it names.
        config.teacher.source = "preset"
        if config.teacher.path.endswith("t5-base"):
            config.teacher.preset = "t5-base"
    if not os.path.isfile(config.data.vocab):  # the demo trains its own vocabulary first
        config.data.vocab = str(SPIECE)
    if path.endswith("configs/demo.py") and not glob.glob(config.data.files):  # the demo writes its corpus first
        config.data.files = str(ROOT.parent / "shared" / "data" / "enwiki_2015_extract" / "AA" / "wiki_0*.gz")
    if config.model.source != "preset":  # the checkpoint to finetune is a user path too
        config.model.source = "preset"
        config.model.preset = "bart-base" if "bart" in os.path.basename(path) else "t5-v1_1-small"
    validate_config(config)
    spec = distill_spec(config)
    student = student_config(config)
    teacher = teacher_config(config) if spec.needs_teacher else None
    spec.check_models(teacher, student)


def test_small_cpu_config_distills_and_checkpoints(tmp_path):
    """configs/small_cpu.py itself for 20 steps (a random teacher of its teacher's shape stands in for
    the pretrained one): every distillation term falls, checkpoints are written."""
    workdir = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "miniend_jax.main", "--config=configs/small_cpu.py", f"--workdir={workdir}",
         "--config.teacher.source=preset", "--config.train.steps=20", "--config.train.batch_size=8",
         "--config.train.log_every=1", "--config.train.checkpoint_every=10", "--config.train.eval_batches=1",
         "--config.data.shuffle_buffer=64", "--config.data.files=../shared/data/enwiki_2015_extract/AA/wiki_0*.gz"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    train = [r for r in rows if "loss" in r]
    assert len(train) == 20
    for term in ("loss", "loss/logit", "loss/decoder_self", "loss/encoder_self"):
        early = np.mean([r[term] for r in train[:5]])
        late = np.mean([r[term] for r in train[-5:]])
        assert late < early, (term, early, late)
    assert sorted(n for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()) == ["10", "20"]
