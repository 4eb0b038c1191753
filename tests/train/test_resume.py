"""A run resumed under changed inputs or a changed `train.steps`: the rules of `miniend_jax/train/resume.py`,
unit by unit and through the CLI (a short tiny run on a corpus of this test's own, resumed after each
change)."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from miniend_jax.errors import ConfigError
from miniend_jax.train import resume
from tests.conftest import ROOT, config_with

WIKI = ROOT.parent / "shared" / "data" / "enwiki_2015_extract" / "AA" / "wiki_00.gz"


def _text_lines(count: int, skip: int = 0) -> list[str]:
    with gzip.open(WIKI, "rt", encoding="utf-8") as f:
        lines = [l.strip() for l in f if len(l.strip()) > 200 and not l.startswith("<")]
    return lines[skip: skip + count]


def _corpus(directory, names=("a.txt", "b.txt", "c.txt"), lines_per_file=60):
    directory.mkdir(exist_ok=True)
    for n, name in enumerate(names):
        (directory / name).write_text("\n".join(_text_lines(lines_per_file, n * lines_per_file)) + "\n")
    return directory


# -- the rule, file by file ------------------------------------------------------------------------
def _record(directory, validation_files=1):
    return resume.input_record("files", sorted(str(p) for p in directory.iterdir()), validation_files)


def test_each_kind_of_input_change_is_named(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    before = _record(corpus)
    assert resume.input_changes(before, _record(corpus)) == []
    kinds = lambda: [c.kind for c in resume.input_changes(before, _record(corpus))]

    with open(corpus / "a.txt", "a") as f:
        f.write("one more line of text appended at the end of the file\n")
    assert kinds() == ["appended"]
    (corpus / "d.txt").write_text("a new file sorting last: it would become the held-out file\n")
    assert kinds() == ["added", "appended"]
    (corpus / "d.txt").unlink()
    (corpus / "b.txt").write_text((corpus / "b.txt").read_text().replace("e", "E", 1))  # same size, new bytes
    assert kinds() == ["appended", "replaced"]
    (corpus / "b.txt").write_text("short\n")
    assert kinds() == ["appended", "replaced"]
    (corpus / "c.txt").unlink()
    assert kinds() == ["removed", "appended", "replaced"]
    assert [c.kind for c in resume.input_changes(before, _record(corpus, validation_files=0))][-1] == "held_out"
    reordered = dict(before, files=list(reversed(before["files"])))
    assert [c.kind for c in resume.input_changes(before, reordered)] == ["reordered"]
    c4 = resume.input_record("c4", tfds_name="c4/en:3.0.1")
    assert [c.kind for c in resume.input_changes(c4, resume.input_record("c4", tfds_name="c4/en:3.1.0"))] == ["source"]


def test_appending_continues_and_every_other_change_is_refused_or_restarts(tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus")
    before = _record(corpus)
    with open(corpus / "c.txt", "a") as f:
        f.write("appended\n")
    assert resume.check_inputs(before, _record(corpus), "error", "the checkpoint") is True
    assert "c.txt (" in capsys.readouterr().out
    (corpus / "d.txt").write_text("new\n")
    with pytest.raises(ConfigError, match=r"inputs changed since the checkpoint \(added: .*d.txt\).*"
                                          "on_input_change=restart"):
        resume.check_inputs(before, _record(corpus), "error", "the checkpoint")
    assert resume.check_inputs(before, _record(corpus), "restart", "the checkpoint") is False
    assert "input pipeline starts again" in capsys.readouterr().out
    assert resume.check_inputs(None, _record(corpus), "error", "an old checkpoint") is True


def test_a_schedule_moved_by_train_steps_is_found_at_its_first_differing_step():
    """Linear decay from 3e-3 without warm-up: rate(s) = 3e-3 * (1 - s / T) (optax.linear_schedule)."""
    optim = config_with("tiny", **{"optim.decay": "linear"}).optim
    at, old, new = resume.rate_change(optim, 4, 8, 4)
    assert at == 4 and old == pytest.approx(0.0, abs=1e-12) and new == pytest.approx(3e-3 * (1 - 4 / 8), rel=1e-6)
    at, old, new = resume.rate_change(optim, 20, 40, 10)
    assert at == 10 and old == pytest.approx(3e-3 * 0.5, rel=1e-6) and new == pytest.approx(3e-3 * 0.75, rel=1e-6)
    constant = config_with("tiny", **{"optim.decay": "constant"}).optim
    at, old, new = resume.rate_change(constant, 20, 40, 10)
    assert old == new == pytest.approx(3e-3)
    # A warm-up given as a fraction of the run moves with it, even under a constant rate.
    fraction = config_with("tiny", **{"optim.decay": "constant", "optim.warmup_steps": -1,
                                      "optim.warmup_fraction": 0.5}).optim
    at, old, new = resume.rate_change(fraction, 20, 40, 5)
    assert at == 5 and old == pytest.approx(3e-3 * 5 / 10, rel=1e-6) and new == pytest.approx(3e-3 * 5 / 20, rel=1e-6)


def test_train_steps_rules(capsys):
    meta = {"step": 20}
    resume.check_train_steps(config_with("tiny", **{"train.steps": 20}), meta, 20, "ckpt")
    assert "the run is complete: ckpt is at train.steps=20; its final evaluation runs again" in capsys.readouterr().out
    linear = config_with("tiny", **{"optim.decay": "linear", "train.steps": 10})
    with pytest.raises(ConfigError, match=r"train.steps=10 is below the step of ckpt: .*train.steps > 20"):
        resume.check_train_steps(linear, meta, 30, "ckpt")
    longer = config_with("tiny", **{"optim.decay": "linear", "train.steps": 60})
    with pytest.raises(ConfigError, match=r"train.steps 30 -> 60 moves .* from 0.001 to 0.002.*Restore train.steps=30"):
        resume.check_train_steps(longer, meta, 30, "ckpt")
    resume.check_train_steps(config_with("tiny", **{"optim.decay": "linear", "train.steps": 60,
                                                     "overwrite_config": True}), meta, 30, "ckpt")
    resume.check_train_steps(config_with("tiny", **{"optim.decay": "constant", "train.steps": 60}), meta, 30, "ckpt")


# -- through the CLI --------------------------------------------------------------------------------
def _launch(workdir, corpus, *overrides):
    command = [sys.executable, "-m", "miniend_jax.main", "--config=tests/configs/tiny.py", f"--workdir={workdir}",
               f"--config.data.files={corpus}/*.txt", "--config.data.validation_files=1",
               "--config.train.checkpoint_every=2", "--config.train.eval_batches=1",
               "--config.train.async_checkpoints=False", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _steps(workdir):
    return sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())


def test_a_resume_under_changed_inputs_or_steps_says_what_happens(tmp_path):
    corpus, workdir = _corpus(tmp_path / "corpus"), tmp_path / "work"
    first = _launch(workdir, corpus, "--config.train.steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    assert _steps(workdir) == [2, 4]
    listing = sorted(os.listdir(workdir / "checkpoints"))

    # Lowered below the checkpoint: refused before anything is written (it exited 0 having done nothing).
    lowered = _launch(workdir, corpus, "--config.train.steps=2")
    assert lowered.returncode == 2
    assert "train.steps=2 is below the step of the newest checkpoint (step 4)" in lowered.stderr
    # Raised under linear decay: the rate at step 4 would jump from 0 back up; refused.
    raised = _launch(workdir, corpus, "--config.train.steps=8")
    assert raised.returncode == 2 and "train.steps 4 -> 8 moves the learning-rate schedule" in raised.stderr

    # A file added to the glob sorts last, so the held-out file would become training data: refused.
    (corpus / "d.txt").write_text("\n".join(_text_lines(40, 500)) + "\n")
    added = _launch(workdir, corpus, "--config.train.steps=4")
    assert added.returncode == 2, added.stderr[-2000:]
    assert "added: " in added.stderr and "d.txt" in added.stderr and len(added.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(workdir / "checkpoints")) == listing  # nothing set aside, nothing written
    (corpus / "d.txt").unlink()

    # Appended to: continues from the position (with overwrite_config the schedule may move).
    with open(corpus / "a.txt", "a") as f:
        f.write("\n".join(_text_lines(20, 600)) + "\n")
    appended = _launch(workdir, corpus, "--config.train.steps=6", "--config.overwrite_config=True")
    assert appended.returncode == 0, appended.stderr[-3000:]
    assert "a.txt" in appended.stdout and "grew since" in appended.stdout
    assert "resumed from checkpoint at step 4" in appended.stdout and _steps(workdir)[-1] == 6
    from miniend_jax.checkpoints.state import read_meta
    meta = read_meta(str(workdir))
    assert meta["train_steps"] == 6
    sizes = [os.path.getsize(corpus / name) for name in ("a.txt", "b.txt", "c.txt")]
    assert [f["size"] for f in meta["inputs"]["files"]] == sizes

    # Replaced, then resumed with data.on_input_change=restart: state resumes, the pipeline starts afresh.
    (corpus / "b.txt").write_text("\n".join(_text_lines(60, 700)) + "\n")
    # (train.steps as before: the run is complete, so only its final evaluation runs, on the restored state.)
    restart = _launch(workdir, corpus, "--config.train.steps=6", "--config.data.on_input_change=restart")
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert "replaced: " in restart.stdout and "input pipeline starts again" in restart.stdout
    assert "resumed from checkpoint at step 6" in restart.stdout and "the run is complete" in restart.stdout
    losses = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
    assert sorted({r["step"] for r in losses if "loss" in r}) == list(range(1, 7))
    assert np.isfinite([r["loss"] for r in losses if "loss" in r]).all()


def test_a_finetune_records_its_train_files_and_refuses_a_replaced_one(tmp_path):
    """The same rule for a finetuning run's Tasks: its input position refers to the train split's files."""
    from miniend_jax import inputs
    folder = tmp_path / "topics"
    folder.mkdir()
    (folder / "train.tsv").write_text("the cat sat\tanimals\nstocks fell\tmarkets\nthe dog ran\tanimals\n")
    (folder / "dev.tsv").write_text("bonds rose\tmarkets\n")
    config = config_with("tiny_finetune", **{"tasks.classification_dirs": str(folder), "tasks.train": "cls_topics",
                                             "tasks.eval": "cls_topics"})
    inputs.register_tasks(config)
    assert inputs.train_files(config) == [str(folder / "train.tsv")]
    recorded = inputs.build_task_data(config, 0, 1).inputs
    assert [f["path"] for f in recorded["files"]] == [str(folder / "train.tsv")]
    meta = {"step": 20, "train_steps": config.train.steps, "inputs": recorded}
    assert resume.check_resume(config, str(tmp_path), meta, inputs.build_task_data(config, 0, 1).inputs) is True
    (folder / "train.tsv").write_text("bonds rose\tmarkets\nthe cat sat\tanimals\n")
    inputs.register_tasks(config)
    with pytest.raises(ConfigError, match=r"replaced: .*train.tsv"):
        resume.check_resume(config, str(tmp_path), meta, inputs.build_task_data(config, 0, 1).inputs)


def test_a_changed_teacher_or_vocabulary_is_refused_whatever_the_input_policy(tmp_path):
    """A miniend teacher workdir that trained on (its newest checkpoint is what `teacher.path` loads), a HF
    teacher's weights rewritten, a vocabulary file replaced: every step so far was trained against the
    recorded ones, so the resume is refused, also under data.on_input_change=restart."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text('{"d_model": 64}')
    (teacher / "model.safetensors").write_bytes(b"\x00" * 300_000)
    vocab = tmp_path / "spiece.model"
    vocab.write_bytes((ROOT.parent / "shared" / "data" / "t5_spiece" / "spiece.model").read_bytes())
    config = config_with("tiny", **{"teacher.source": "hf", "teacher.path": str(teacher), "data.vocab": str(vocab),
                                    "data.on_input_change": "restart"})
    meta = {"step": 10, "train_steps": config.train.steps, "inputs": {"models": resume.models_record(config)}}
    assert resume.check_resume(config, str(tmp_path), meta, {"models": resume.models_record(config)})
    with open(teacher / "model.safetensors", "r+b") as f:
        f.seek(299_999)
        f.write(b"\x01")
    with pytest.raises(ConfigError, match=r"the teacher changed since .*replaced: .*model.safetensors"):
        resume.check_resume(config, str(tmp_path), meta, {"models": resume.models_record(config)})
    meta["inputs"]["models"] = resume.models_record(config)
    vocab.write_bytes(vocab.read_bytes()[:-10])
    with pytest.raises(ConfigError, match=r"the vocab changed since .*spiece.model"):
        resume.check_resume(config, str(tmp_path), meta, {"models": resume.models_record(config)})


def test_a_changed_bpe_tokenizer_is_refused_naming_its_file(tmp_path):
    """A byte-level BPE vocabulary (BART's) is a directory: each of its files is recorded, and a rewritten one
    is named."""
    from miniend_jax.checkpoints.bpe import corpus_lines, train_bpe
    vocab = train_bpe(corpus_lines(str(ROOT.parent / "shared" / "data" / "enwiki_2015_extract" / "AA" / "wiki_00.gz"))[:300],
                      300, str(tmp_path / "bpe"))
    config = config_with("tiny_bart", **{"data.vocab": vocab, "teacher.source": "preset"})
    meta = {"step": 10, "train_steps": config.train.steps, "inputs": {"models": resume.models_record(config)}}
    assert resume.check_resume(config, str(tmp_path), meta, {"models": resume.models_record(config)})
    tokenizer = tmp_path / "bpe" / "tokenizer.json"   # what loads (vocab.json + merges.txt only without it)
    tokenizer.write_text(tokenizer.read_text() + "\n")
    with pytest.raises(ConfigError, match=r"the vocab changed since .*tokenizer.json"):
        resume.check_resume(config, str(tmp_path), meta, {"models": resume.models_record(config)})
