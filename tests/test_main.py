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
from tests.conftest import ROOT, config_with

TINY = "tests/configs/tiny.py"


def _command(workdir, *overrides):
    return [sys.executable, "-m", "miniend_jax.main", f"--config={TINY}", f"--workdir={workdir}", *overrides]


def _run(workdir, *overrides, timeout=300, with_stderr=False):
    result = subprocess.run(_command(workdir, *overrides), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return (result.stdout, result.stderr) if with_stderr else result.stdout


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
    stdout, stderr = _run(workdir, "--config.export.at_end=True", with_stderr=True)
    return workdir, stdout, stderr


def test_short_run_lowers_the_loss_and_checkpoints(uninterrupted):
    workdir, stdout, _ = uninterrupted
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


# What TensorFlow, XLA, seqio and orbax print unasked on a machine without GPU (miniend_jax/console.py).
NOISE = ("cuda", "cuInit", "oneDNN", "cpu_feature_guard", "absl::InitializeLog", "W0000", "I0000", "E0000",
         "WARNING:absl", "logger_cls", "features_length", "read only")


def test_the_console_shows_no_library_noise(uninterrupted):
    _, stdout, stderr = uninterrupted
    assert not [word for word in NOISE if word.lower() in (stdout + stderr).lower()], stderr[-3000:]


# Adafactor (its factored statistics shaped unlike the parameters) for the kill test; the AdamW run above
# resumes bit for bit in test_truncated_newest_checkpoint_is_skipped.
ADAFACTOR = ("--config.optim.name=adafactor", "--config.optim.learning_rate=1e-2",
             "--config.optim.adafactor.min_dim_size_to_factor=16")


@pytest.fixture(scope="module")
def uninterrupted_adafactor(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted_adafactor"))
    _run(workdir, *ADAFACTOR)
    return workdir


def _kill_at(workdir, target_step, rng, *overrides):
    """Starts the run and kills it with SIGKILL soon after `target_step` was logged; returns the last
    logged step."""
    process = subprocess.Popen(_command(workdir, *overrides), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    metrics = os.path.join(workdir, "metrics.jsonl")
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(metrics) and max(_losses(workdir), default=0) >= target_step:
            break
        time.sleep(0.05)
    time.sleep(float(rng.uniform(0, 0.3)))
    process.send_signal(signal.SIGKILL)
    process.wait()
    return max(_losses(workdir), default=0) if os.path.exists(metrics) else 0


def _final_params(workdir):
    from miniend_jax.build import restore_workdir
    _, params, meta = restore_workdir(workdir)
    return meta["step"], params


def test_three_sigkills_end_with_bitwise_equal_parameters(uninterrupted_adafactor, tmp_path):
    reference_losses = _losses(uninterrupted_adafactor)
    workdir = str(tmp_path)
    rng = np.random.default_rng(int(time.time()))
    # Synchronous saves, so that the bound below is one interval; an asynchronous save in flight at the
    # kill would add the steps run while it was written.
    sync = ("--config.train.async_checkpoints=False", *ADAFACTOR)
    last_saved = 0
    # One kill at a random moment inside each checkpoint interval: before any checkpoint, then mid-interval.
    for interval in range(3):
        logged = _kill_at(workdir, 10 * interval + int(rng.integers(1, 9)), rng, *sync)
        assert os.path.exists(os.path.join(workdir, "lock"))  # left by the killed run: must not block the next
        saved = _complete_steps(workdir)
        last_saved = saved[-1] if saved else 0
        assert logged - last_saved <= 10, (logged, saved)  # at most one checkpoint interval lost
    assert last_saved >= 10
    stdout = _run(workdir, *sync)
    assert f"resumed from checkpoint at step {last_saved}" in stdout
    losses = _losses(workdir)
    for step in range(last_saved + 1, 31):
        assert losses[step] == reference_losses[step], step
    step, params = _final_params(workdir)
    reference_step, reference = _final_params(uninterrupted_adafactor)
    assert step == reference_step == 30
    import jax
    jax.tree.map(np.testing.assert_array_equal, params, reference)


def test_sigterm_checkpoints_the_current_step_and_exits_zero(tmp_path):
    """... and while it runs, the same command started again is refused, naming the running one (both ran
    to the end, every step logged twice)."""
    workdir = str(tmp_path)
    process = subprocess.Popen(_command(workdir, "--config.train.steps=1000000"), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.exists(os.path.join(workdir, "metrics.jsonl"))
                                          and max(_losses(workdir), default=0) >= 3):
        time.sleep(0.1)
    second = subprocess.run(_command(workdir, "--config.train.steps=1000000"), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"is in use by pid {process.pid} on " in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert os.path.exists(os.path.join(workdir, "lock"))
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    stopped = [line for line in stdout.splitlines() if line.startswith("stopped by signal SIGTERM at step")]
    assert stopped, stdout[-2000:]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert step >= 3 and _complete_steps(workdir)[-1] == step
    steps = [row["step"] for row in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if "loss" in row]
    assert len(steps) == len(set(steps)) and not os.path.exists(os.path.join(workdir, "lock"))


def test_truncated_newest_checkpoint_is_skipped(uninterrupted, tmp_path):
    import shutil
    workdir = str(tmp_path / "copy")
    shutil.copytree(uninterrupted[0], workdir)
    newest = os.path.join(workdir, "checkpoints", "30", "params")
    files = [os.path.join(d, f) for d, _, fs in os.walk(newest) for f in fs]
    biggest = max(files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)
    stdout = _run(workdir)
    assert "warning: checkpoint at step 30 is unreadable" in stdout
    assert "resumed from checkpoint at step 20" in stdout
    reference = _losses(uninterrupted[0])
    losses = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    resumed = {r["step"]: r["loss"] for r in losses[-12:] if "loss" in r}
    for step in range(21, 31):
        assert resumed[step] == reference[step], step


def test_repeated_nonfinite_losses_stop_the_run_keeping_the_checkpoint(tmp_path):
    from miniend_jax.errors import TrainingError
    from miniend_jax.modes import run
    config = _tiny_config(**{"debug.nan_loss_at_step": 14, "train.max_consecutive_nonfinite": 1})
    with pytest.raises(TrainingError, match=r"1 consecutive steps up to step 14 .* last good checkpoint is step 10"):
        run(config, str(tmp_path))
    assert _complete_steps(str(tmp_path)) == [10]


def test_exported_student_matches_in_pytorch(uninterrupted):
    import jax
    import torch
    import transformers
    from miniend_jax.build import restore_workdir
    from miniend_jax.checkpoints.hf import load_hf_checkpoint
    from miniend_jax.models.t5 import T5
    workdir = uninterrupted[0]
    config, params = load_hf_checkpoint(os.path.join(workdir, "hf_student"))
    _, trained, meta = restore_workdir(workdir, config)
    assert meta["step"] == 30
    jax.tree.map(np.testing.assert_array_equal, params, trained)
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
    return config_with("tiny", **changes)


def _empty_dir_with(tmp_path, name, text=""):
    directory = tmp_path / "corpus"
    directory.mkdir()
    (directory / name).write_text(text)
    return str(directory / "*")


# Bad values of a distill run's config, each with the error it must raise (also in mode=plan, test_plan.py).
BAD_CONFIGS = [
    ({"distill.relation_heads": 7}, r"relation_heads=7 does not divide .*\(e.g. 4\)"),
    ({"distill.objective": "minilm3"}, "distill.objective='minilm3'"),
    ({"student.overrides.vocab_size": 32100}, "teacher vocab_size=32128 != student vocab_size=32100"),
    ({"student.overrides.vocab_size": 32000, "teacher.overrides.vocab_size": 32000},
     r"vocab_size=32000 is smaller than the tokenizer's 32100"),
    ({"data.files": "/nonexistent/corpus/*.txt"}, "matches no file"),
    ({"teacher.source": "hf", "teacher.path": "/nonexistent/t5"}, "teacher.path='/nonexistent/t5'"),
    ({"train.microbatches": 3}, "train.microbatches=3: must divide train.batch_size=8"),
    ({"distill.student_layers.decoder": 3}, "student_layers.decoder=3 is outside"),
    ({"mode": "train"}, "mode='train'"),
    ({"data.vocab": "/nonexistent/spiece.model"}, "data.vocab"),
    ({"distill.interpolation.schedule": "linear"}, "distill.interpolation.steps=0"),
    ({"distill.interpolation.schedule": "linear", "distill.interpolation.steps": 5,
      "distill.interpolation.start": 1.5}, r"distill.interpolation.start=1.5: use a value in \[0, 1\]"),
    ({"distill.interpolation.schedule": "exponential"}, "distill.interpolation.schedule='exponential'"),
    ({"distill.temperature": 0.0}, "distill.temperature=0.0"),
    ({"train.steps": 0}, "train.steps=0: use a positive integer"),
    ({"train.keep_checkpoints": 0}, "train.keep_checkpoints=0"),
    ({"train.max_consecutive_nonfinite": 0}, "train.max_consecutive_nonfinite=0"),
    ({"optim.learning_rate": -1.0}, "optim.learning_rate=-1.0"),
    ({"optim.decay": "exponential"}, "optim.decay='exponential'"),
    ({"optim.name": "sgd"}, "optim.name='sgd': use one of adamw, adamw_scaled, adafactor"),
    ({"optim.name": "adafactor", "optim.adafactor.decay_rate": 0.0}, r"optim.adafactor.decay_rate=0.0: use a value in \(0, 1\]"),
    ({"data.noise_density": 1.5}, r"data.noise_density=1.5: use a value in \(0, 1\)"),
    ({"data.inputs_length": 4}, "data.inputs_length=4: use an integer >= 8"),
    ({"data.format": "csv"}, "data.format='csv'"),
    ({"data.source": "s3"}, "data.source='s3'"),
    ({"data.on_bad_input": "ignore"}, "data.on_bad_input='ignore'"),
    ({"data.validation_files": 10}, r"data.validation_files=10 must be in \[0, 9\]"),
    ({"student.preset": "t5-tiny"}, "unknown model preset 't5-tiny'"),
    ({"student.init": "copy"}, "student.init='copy'"),
    ({"student.init": "teacher_layers"}, "student.init='teacher_layers' needs the teacher's widths"),
    ({"student.dtype": "float8"}, "model.dtype='float8'"),
    ({"teacher.source": "url"}, "teacher.source='url'"),
    ({"mesh.data": 3}, "data\\*fsdp\\*tensor = 3 but there are 1 devices"),
    ({"student.dtype": "float16"}, "model.dtype='float16': T5 activations overflow float16.*'bfloat16'"),
    ({"teacher.dtype": "float16"}, "model.dtype='float16'"),
    ({"data.inputs_length": 9, "data.targets_length": 2},
     r"data.targets_length=2: span corruption of data.inputs_length=9 makes targets of 3 tokens"),
    ({"data.mean_noise_span_length": 0.5}, r"data.mean_noise_span_length=0.5: use a value >= 1"),
    ({"data.vocab": "setup.py"}, r"data.vocab='setup.py' is not a SentencePiece model"),
    ({"train.steps": -5}, "train.steps=-5: use a positive integer"),
]


@pytest.mark.parametrize("changes,message", BAD_CONFIGS)
def test_bad_config_fails_before_work(tmp_path, changes, message):
    from miniend_jax.modes import run
    workdir = tmp_path / "work"
    with pytest.raises(ConfigError, match=message):
        run(_tiny_config(**changes), str(workdir))
    assert not workdir.exists()


@pytest.mark.parametrize("vocab", ["setup.py", "/nonexistent/spiece.model"])
def test_export_refuses_a_tokenizer_that_is_not_one(tmp_path, vocab):
    """export wrote the weights without a tokenizer, saying nothing, when data.vocab was not a file."""
    from miniend_jax.modes import run
    with pytest.raises(ConfigError, match=f"data.vocab='{vocab}'.*or set data.vocab='' to export the weights"):
        run(_tiny_config(**{"mode": "export", "data.vocab": vocab}), str(tmp_path))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("arguments, message", [
    (["--config.train.stepz=5"], r"--config\.train\.stepz=5: 'stepz' Did you mean \"steps\""),
    (["--config.train.steps=abc"], r"flag --config\.train\.steps=abc: invalid literal for int"),
    (["--config=configs/nonexistent.py"], r"configs/nonexistent\.py.*No such file"),
    (["--config=configs/finetune/glue.py:sst3"], r"ValueError: configs/finetune/glue\.py:sst3: use one of cola"),
])
def test_a_wrong_config_flag_is_one_line_and_exit_2(tmp_path, arguments, message):
    """A typo in a `--config.<field>` override, a value of the wrong type, a missing config file or a bad
    config argument: like every other bad input, one line naming it, exit status 2, nothing written (they
    were tracebacks from inside absl's flag parser, exit 1)."""
    import re
    workdir = tmp_path / "work"
    result = subprocess.run(_command(workdir, *arguments), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not workdir.exists()


def test_empty_corpus_fails_before_work(tmp_path):
    from miniend_jax.modes import run
    workdir = tmp_path / "work"
    files = _empty_dir_with(tmp_path, "a.txt", "\n\n   \n")
    (tmp_path / "corpus" / "b.txt").write_text("")
    config = _tiny_config(**{"data.files": files, "data.validation_files": 1})
    with pytest.raises(ConfigError, match="yields no training examples"):
        run(config, str(workdir))
    assert not workdir.exists()


def test_workdir_of_another_run_is_not_overwritten(tmp_path):
    from miniend_jax.config_checks import write_resolved_config
    write_resolved_config(_tiny_config(), str(tmp_path))
    before = (tmp_path / "config.json").read_text()
    write_resolved_config(_tiny_config(**{"train.steps": 60}), str(tmp_path))  # continuing: allowed
    # The layout over devices may change on its own (orbax reshards the state on restore).
    write_resolved_config(_tiny_config(**{"train.steps": 60, "mesh.fsdp": 2, "mesh.rules.embed": ""}), str(tmp_path))
    with pytest.raises(ConfigError, match="holds a different run .*distill.objective"):
        write_resolved_config(_tiny_config(**{"distill.objective": "miniend_e"}), str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 60
    assert json.loads(before)["distill"] == json.loads((tmp_path / "config.json").read_text())["distill"]
    # A workdir of an older version lacks settings added since: not a change (it was refused before).
    older = json.loads((tmp_path / "config.json").read_text())
    del older["decode"]["length_penalty_rule"], older["data"]["on_input_change"]
    (tmp_path / "config.json").write_text(json.dumps(older))
    write_resolved_config(_tiny_config(**{"train.steps": 60, "mesh.fsdp": 2, "mesh.rules.embed": ""}), str(tmp_path))
    (tmp_path / "config.json").write_text('{"train": {"steps": 6')  # cut short
    with pytest.raises(ConfigError, match=r"config.json is damaged .*overwrite_config=True"):
        write_resolved_config(_tiny_config(), str(tmp_path))


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


def test_teacher_workdir_without_checkpoint(tmp_path):
    from miniend_jax.modes import run
    (tmp_path / "empty_run").mkdir()
    config = _tiny_config(**{"teacher.source": "miniend", "teacher.path": str(tmp_path / "empty_run")})
    with pytest.raises(ConfigError, match="holds no miniend_jax checkpoint"):
        run(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()
    assert os.listdir(tmp_path / "empty_run") == []  # reading another run's directory creates nothing there


def test_teacher_directory_of_another_architecture(tmp_path):
    import transformers
    from miniend_jax.errors import CheckpointError
    from miniend_jax.modes import run
    transformers.BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=2).save_pretrained(tmp_path / "bert")
    config = _tiny_config(**{"teacher.source": "hf", "teacher.path": str(tmp_path / "bert")})
    with pytest.raises(CheckpointError, match="model_type='bert'"):
        run(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_corrupt_corpus_file_with_error_policy(tmp_path):
    from miniend_jax.modes import run
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"part{i}.txt").write_text("Some text for training.\n" * 50)
    (corpus / "part1.txt").write_bytes(b"good\n\xff\xfe\n")
    config = _tiny_config(**{"data.files": str(corpus / "*.txt"), "data.validation_files": 1,
                             "data.on_bad_input": "error"})
    with pytest.raises(ConfigError, match="part1.txt: line 2 is not valid UTF-8"):
        run(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def _tiny_hf_teacher(directory, **config_changes):
    """A random HF T5 of the tiny config's teacher shape (T5 vocabulary), saved with save_pretrained,
    its config.json then changed by `config_changes`."""
    import torch
    import transformers
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=32128, d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0))
    model.save_pretrained(directory)
    path = os.path.join(directory, "config.json")
    config = json.load(open(path))
    config.update(config_changes)
    json.dump(config, open(path, "w"))


@pytest.mark.parametrize("fault", ["config_disagrees", "tensor_missing"])
def test_a_failed_teacher_load_leaves_the_workdir_untouched(tmp_path, fault):
    """A teacher whose config.json disagrees with its weights (or lacks a tensor) fails with a clear error
    and writes nothing, so the corrected rerun in the same workdir is not refused as 'a different run'."""
    from safetensors.numpy import load_file, save_file
    from miniend_jax.errors import CheckpointError
    from miniend_jax.config_checks import check_workdir
    from miniend_jax.modes import run
    bad, good = str(tmp_path / "bad"), str(tmp_path / "good")
    _tiny_hf_teacher(good)
    if fault == "config_disagrees":
        _tiny_hf_teacher(bad, d_ff=96)
    else:
        _tiny_hf_teacher(bad)
        tensors = load_file(os.path.join(bad, "model.safetensors"))
        del tensors["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
        save_file(tensors, os.path.join(bad, "model.safetensors"), metadata={"format": "pt"})
    workdir = tmp_path / "work"
    with pytest.raises(CheckpointError, match="shape|lacks"):
        run(_tiny_config(**{"teacher.source": "hf", "teacher.path": bad}), str(workdir))
    assert not workdir.exists()
    check_workdir(_tiny_config(**{"teacher.source": "hf", "teacher.path": good}), str(workdir))  # not refused


def test_mesh_that_does_not_divide_a_parameter_is_refused_before_compiling(tmp_path):
    """`mode=plan` on 3 simulated devices with tensor=3: the heads (2 x 16 = 32 wide) cannot be split in
    three. The error names the parameter, the mesh axis and the fix, before anything compiles or is
    written (it was a JAX sharding error from inside the compile)."""
    from miniend_jax.config_checks import check_models_divide
    from miniend_jax.models import T5Config
    student = T5Config(vocab_size=32128, d_model=32, d_kv=16, num_heads=2, d_ff=66, num_encoder_layers=1,
                       num_decoder_layers=1)
    with pytest.raises(ConfigError, match=r"student parameter .*mlp.*dimension 1 \(mlp=66\) does not divide "
                                          r"over mesh axes tensor=4.*mesh.rules.mlp=''"):
        check_models_divide(_tiny_config(), (1, 1, 4), [("student", student)])
    check_models_divide(_tiny_config(), (1, 1, 2), [("student", student)])
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    result = subprocess.run(_command(tmp_path / "plan", "--config.mode=plan", "--config.mesh.data=1",
                                     "--config.mesh.tensor=3"), cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "does not divide over mesh axes tensor=3" in result.stderr
    assert not (tmp_path / "plan").exists()


def test_resuming_another_model_is_refused_before_anything_changes(uninterrupted, tmp_path):
    """`overwrite_config=True` with another student shape: refused before config.json is rewritten, and
    no checkpoint is set aside (it is the config that is wrong, not the checkpoint)."""
    import shutil
    from miniend_jax.modes import run
    workdir = tmp_path / "copy"
    shutil.copytree(uninterrupted[0], workdir)
    before = (workdir / "config.json").read_text()
    steps = sorted(os.listdir(workdir / "checkpoints"))
    config = _tiny_config(**{"student.overrides.d_ff": 48, "overwrite_config": True, "train.steps": 40})
    with pytest.raises(ConfigError, match=r"step 30\) in .* holds a model with d_ff=64, this run's has 48"):
        run(config, str(workdir))
    assert (workdir / "config.json").read_text() == before
    assert sorted(os.listdir(workdir / "checkpoints")) == steps
