"""The CLI end to end: a short run lowers the loss, checkpoints, survives SIGKILL, exports to HF; and bad
configs stop before any compile, naming the field, leaving the workdir as it was."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from miniend_jax.errors import ConfigError
from tests.conftest import ROOT

TINY = "tests/configs/tiny.py"


def _command(workdir, *overrides):
    return [sys.executable, "-m", "miniend_jax.main", f"--config={TINY}", f"--workdir={workdir}", *overrides]


def _run(workdir, *overrides, timeout=300):
    result = subprocess.run(_command(workdir, *overrides), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def _complete_steps(workdir):
    root = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(root) if n.isdigit()) if os.path.isdir(root) else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    stdout = _run(workdir, "--config.export.at_end=True")
    return workdir, stdout


def test_short_run_lowers_the_loss_and_checkpoints(uninterrupted):
    workdir, stdout = uninterrupted
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, 31))
    early = np.mean([losses[s] for s in range(1, 6)])
    late = np.mean([losses[s] for s in range(26, 31)])
    assert late < 0.8 * early, (early, late)
    assert _complete_steps(workdir) == [10, 20, 30]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["distill"]["objective"] == "miniend_d"
    row = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))][-2]
    for key in ("loss/logit", "loss/decoder_self", "loss/cross", "grad_norm/encoder", "grad_norm/decoder",
                "learning_rate", "tokens_per_second", "student_tflops", "teacher_tflops"):
        assert key in row and np.isfinite(row[key])
    assert "eval/ground_truth" in stdout
    assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_killed_run_resumes_with_the_same_losses(uninterrupted, tmp_path):
    reference = _losses(uninterrupted[0])
    workdir = str(tmp_path)
    process = subprocess.Popen(_command(workdir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not _complete_steps(workdir) and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = _complete_steps(workdir)
    assert saved and saved[-1] < 30, f"the run should be killed mid-way, found checkpoints {saved}"
    stdout = _run(workdir)
    resumed_at = saved[-1]
    assert f"resumed from checkpoint at step {resumed_at}" in stdout
    losses = _losses(workdir)
    for step in range(resumed_at + 1, 31):
        np.testing.assert_allclose(losses[step], reference[step], rtol=1e-6, err_msg=f"step {step}")


def test_exported_student_matches_in_pytorch(uninterrupted):
    import jax
    import torch
    import transformers
    from miniend_jax.checkpoints.hf import load_hf_checkpoint
    from miniend_jax.checkpoints.state import restore_params
    from miniend_jax.main import _host_abstract, _host_sharding
    from miniend_jax.models.t5 import T5
    workdir = uninterrupted[0]
    config, params = load_hf_checkpoint(os.path.join(workdir, "hf_student"))
    abstract = _host_abstract(config)
    trained, meta = restore_params(workdir, abstract, jax.tree.map(lambda _: _host_sharding(), abstract))
    assert meta["step"] == 30
    jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(trained))
    model = transformers.T5ForConditionalGeneration.from_pretrained(os.path.join(workdir, "hf_student")).eval()
    rng = np.random.default_rng(0)
    enc = rng.integers(2, 32000, (2, 12))
    dec = np.concatenate([np.zeros((2, 1), int), rng.integers(2, 32000, (2, 6))], 1)
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec)).logits.numpy()
    ours = np.asarray(T5(config).apply({"params": params}, enc, dec).logits)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


# -- bad configurations --------------------------------------------------------------------------
def _tiny_config(**changes):
    import ml_collections
    sys.path.insert(0, str(ROOT))
    from tests.configs import tiny
    config = tiny.get_config()
    for key, value in changes.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _empty_dir_with(tmp_path, name, text=""):
    directory = tmp_path / "corpus"
    directory.mkdir()
    (directory / name).write_text(text)
    return str(directory / "*")


@pytest.mark.parametrize("changes,message", [
    ({"distill.relation_heads": 7}, r"relation_heads=7 does not divide .*\(e.g. 4\)"),
    ({"distill.objective": "minilm3"}, "distill.objective='minilm3'"),
    ({"student.overrides.vocab_size": 32100}, "teacher vocab_size=32128 != student vocab_size=32100"),
    ({"student.overrides.vocab_size": 32000, "teacher.overrides.vocab_size": 32000},
     r"vocab_size=32000 is smaller than the tokenizer's 32100"),
    ({"data.files": "/nonexistent/corpus/*.txt"}, "matches no file"),
    ({"teacher.source": "hf", "teacher.path": "/nonexistent/t5"}, "teacher.path='/nonexistent/t5'"),
    ({"train.microbatches": 3}, "train.microbatches=3: must divide train.batch_size=8"),
    ({"distill.student_layers.decoder": 3}, "student_layers.decoder=3 is outside"),
    ({"mode": "finetune"}, "mode='finetune'"),
    ({"data.vocab": "/nonexistent/spiece.model"}, "data.vocab"),
    ({"distill.interpolation.schedule": "linear"}, "distill.interpolation.steps=0"),
])
def test_bad_config_fails_before_work(tmp_path, changes, message):
    from miniend_jax.main import run
    workdir = tmp_path / "work"
    with pytest.raises(ConfigError, match=message):
        run(_tiny_config(**changes), str(workdir))
    assert not workdir.exists()


def test_empty_corpus_fails_before_work(tmp_path):
    from miniend_jax.main import run
    workdir = tmp_path / "work"
    files = _empty_dir_with(tmp_path, "a.txt", "\n\n   \n")
    (tmp_path / "corpus" / "b.txt").write_text("")
    config = _tiny_config(**{"data.files": files, "data.validation_files": 1})
    with pytest.raises(ConfigError, match="yields no training examples"):
        run(config, str(workdir))
    assert not workdir.exists()


def test_workdir_of_another_run_is_not_overwritten(tmp_path):
    from miniend_jax.main import write_resolved_config
    write_resolved_config(_tiny_config(), str(tmp_path))
    before = (tmp_path / "config.json").read_text()
    write_resolved_config(_tiny_config(**{"train.steps": 60}), str(tmp_path))  # continuing: allowed
    with pytest.raises(ConfigError, match="holds a different run .*distill.objective"):
        write_resolved_config(_tiny_config(**{"distill.objective": "miniend_e"}), str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 60
    assert json.loads(before)["distill"] == json.loads((tmp_path / "config.json").read_text())["distill"]


@pytest.mark.parametrize("source", ["hf", "miniend"])
def test_teacher_from_hf_directory_or_miniend_workdir(uninterrupted, tmp_path, source):
    """The distilled student of one run serves as the teacher of the next, from either format."""
    workdir = uninterrupted[0]
    path = os.path.join(workdir, "hf_student") if source == "hf" else workdir
    out = str(tmp_path / "second")
    stdout = _run(out, f"--config.teacher.source={source}", f"--config.teacher.path={path}",
                  "--config.train.steps=2", "--config.teacher.param_dtype=bfloat16")
    losses = _losses(out)
    assert sorted(losses) == [1, 2] and all(np.isfinite(v) for v in losses.values())
    assert "eval/cross" in stdout
