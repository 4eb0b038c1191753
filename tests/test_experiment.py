"""The miniature comparison (configs/experiments/, miniend_jax/experiment.py): every config builds its train
step, one config of each kind runs one real step (teachers and checkpoints replaced by random models of the
same shapes, short sequences), and
the runner covers every config, skips finished stages, and stops on a failed one."""

import glob
import importlib
import json
import math
import os

import numpy as np
import pytest

from miniend_jax import experiment
from miniend_jax.distill.objectives import OBJECTIVES
from miniend_jax.modes import run
from miniend_jax.plot import read_metrics
from tests.conftest import ROOT

NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(str(ROOT / "configs" / "experiments" / "*.py"))
               if not p.endswith(("__init__.py", "common.py")))
COMMON = importlib.import_module("configs.experiments.common")
CONFIGS = [(name, task) for name in NAMES for task in (COMMON.DOWNSTREAM if name == "finetune" else [None])]


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
    """A 500-piece SentencePiece model of a few Wikipedia paragraphs, in place of the runner's 8k one."""
    import gzip

    from miniend_jax.checkpoints.tokenizer import train_sentencepiece
    folder = tmp_path_factory.mktemp("vocab")
    with gzip.open(ROOT.parent / "shared/data/enwiki_2015_extract/AA/wiki_00.gz", "rt", encoding="utf-8") as f:
        lines = [line for line in f if len(line) > 40 and not line.startswith("<")][:3000]
    (folder / "text.txt").write_text("".join(lines), encoding="utf-8")
    train_sentencepiece(str(folder / "text.txt"), str(folder / "spm.model"), 500)
    return str(folder / "spm.model")


def _one_step(config, vocab: str):
    """The same config, one step on 2 short sequences, models of the same shapes with random weights."""
    config.data.vocab = vocab
    config.train.steps = 1
    config.train.batch_size = 2
    config.train.log_every = 1
    config.train.checkpoint_every = 1
    config.train.eval_every = 0
    config.train.eval_batches = 1
    config.train.async_checkpoints = False
    config.data.shuffle_buffer = 16
    if config.mode == "finetune":
        config.model.source = "preset"   # a student-shaped model in place of a trained workdir
        config.model.preset = "t5-v1_1-small"
        config.model.overrides.update(COMMON.STUDENT_SHAPE)
        config.tasks.glue_dir = str(ROOT.parent / "shared/data/glue")  # the runner writes the SST-2 subset
        config.tasks.eval_examples = 2
        config.tasks.inputs_length = min(config.tasks.inputs_length, 64)
        config.decode.max_length = 4
    else:
        config.data.inputs_length = 32
        config.data.files = str(ROOT.parent / "shared/data/enwiki_2015_extract/AA/wiki_0[0-2].gz")
        config.data.validation_files = 1
        config.teacher.source = "preset"  # the teacher's shape, random weights
    return config


def _config(name, task, vocab):
    module = importlib.import_module(f"configs.experiments.{name}")
    return _one_step(module.get_config() if task is None else module.get_config(task), vocab)


def _traced_step_metrics(config) -> dict:
    """The train step's metrics as shapes: the config's models, objective and schedule traced, not run."""
    import flax.linen as nn
    import jax
    from miniend_jax import build, config_checks, parallel
    from miniend_jax.modes.plan import abstract_batch, feature_lengths, plan_models
    from miniend_jax.train.loop import step_layout
    config_checks.validate_config(config)
    mesh = parallel.make_mesh(*config_checks.validate_layout(config, 1, jax.device_count()))
    rules = parallel.rules_from_config(config.mesh.rules)
    models = plan_models(config)
    models.spec.check_models(models.teacher_config, models.student_config)
    layout = step_layout(build.train_settings(config), models, mesh, rules)
    batch = abstract_batch(mesh, config.train.batch_size, *feature_lengths(config))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return jax.eval_shape(layout.step_fn, layout.abstract_state, layout.abstract_teacher, batch)[1]


@pytest.mark.parametrize("name,task", CONFIGS, ids=[n if t is None else f"{n}:{t}" for n, t in CONFIGS])
def test_experiment_config_builds_its_train_step(name, task, small_vocab):
    """Every config validates and its train step traces with the config's objective: its loss terms are
    those of `OBJECTIVES`."""
    config = _config(name, task, small_vocab)
    metrics = _traced_step_metrics(config)
    terms = {k.split("/")[1] for k in metrics if k.startswith("loss/")}
    if config.mode == "distill":
        assert terms == set(OBJECTIVES[config.distill.objective])
    else:
        assert terms <= {"ground_truth"} and "loss" in metrics


# One real step for each kind of run (pretraining, interpolated distillation with every term kind, and
# finetuning on each downstream task); the other configs differ from these only in the objective's terms,
# which the trace above checks and tests/distill runs.
RUN = [("teacher", None), ("miniend_e_interp", None)] + [("finetune", task) for task in COMMON.DOWNSTREAM]


@pytest.mark.parametrize("name,task", RUN, ids=[n if t is None else f"{n}:{t}" for n, t in RUN])
def test_experiment_config_runs_one_step(name, task, small_vocab, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = _config(name, task, small_vocab)
    run(config, str(tmp_path))
    metrics = read_metrics(str(tmp_path))
    train = [r for r in metrics if "loss" in r]
    assert [r["step"] for r in train] == [1] and math.isfinite(train[0]["loss"])
    if config.mode == "distill":
        terms = {k.split("/")[1] for k in train[0] if k.startswith("loss/")}
        assert terms == set(OBJECTIVES[config.distill.objective])
        interpolated = config.distill.interpolation.schedule != "constant"
        assert (train[0]["alpha"] < 1.0) == interpolated
    if config.mode == "finetune":
        results = json.loads((tmp_path / "results.json").read_text())["results"]
        assert set(results) == set(config.tasks.eval.split(","))
    else:
        assert math.isfinite([r for r in metrics if "eval/ground_truth" in r][-1]["eval/ground_truth"])


def test_runner_covers_every_experiment_config():
    used = set()
    for _, args in experiment.stages("root"):
        config = args[0].removeprefix("--config=").split(":")[0]
        assert os.path.isfile(ROOT / config), config
        used.add(os.path.basename(config)[:-3])
    assert used == set(NAMES)
    stages = experiment.stages("root")
    names = [name for name, _ in stages]
    assert names.index("teacher") == 0 and len(names) == len(set(names))
    assert all("--config.teacher.path=root/teacher" in args for name, args in stages
               if name in dict(experiment.ROWS) and name != "scratch")
    assert all("--config.data.vocab=root/spm8k.model" in args for _, args in stages)
    # Every model, the random-init row too, on every task with every seed; each after its model's stage.
    for model, _ in experiment.MODELS:
        runs = [n for n in names if n.startswith(f"downstream/{model}/")]
        assert len(runs) == len(COMMON.DOWNSTREAM) * len(COMMON.FINETUNE_SEEDS) >= 3 * len(COMMON.DOWNSTREAM)
        if model != experiment.RANDOM_INIT[0]:
            assert names.index(model) < min(names.index(n) for n in runs)
    random_init = [args for name, args in stages if name.startswith("downstream/random_init/")]
    assert all("--config.model.source=preset" in args for args in random_init)


def test_runner_skips_done_stages_and_stops_on_a_failed_one(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    root = str(tmp_path)
    os.makedirs(tmp_path / "done_stage")
    (tmp_path / "done_stage" / "done.json").write_text("{}")
    experiment.run_stage(root, "done_stage", ["--config=/nonexistent.py"])  # skipped: nothing runs
    assert not (tmp_path / "times.jsonl").exists()
    with pytest.raises(SystemExit, match=r"bad failed \(exit \d+\); see .*bad.log.*run the same command again"):
        experiment.run_stage(root, "bad", ["--config=/nonexistent.py"])
    assert not (tmp_path / "bad" / "done.json").exists()
    [attempt] = [json.loads(line) for line in open(tmp_path / "times.jsonl")]
    assert attempt["stage"] == "bad" and attempt["rc"] != 0
    assert experiment.stage_times(root) == {"bad": attempt["seconds"]}


def _finished(root, stage, **files):
    (root / stage).mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (root / stage / f"{name}.json").write_text(json.dumps(content))
    (root / stage / "done.json").write_text("{}")


def test_report_tables_what_the_stages_wrote(tmp_path, monkeypatch):
    """Each model's scores over seeds (mean, std, n), the paired difference to scratch with its interval,
    the instrument check, held-out losses and times; unfinished stages show '-'; both figures are written."""
    from scipy import stats as scipy_stats
    monkeypatch.chdir(ROOT)
    root = tmp_path / "experiment"
    for name, loss in (("teacher", 5.25), ("scratch", 6.5), ("l_imp", 6.125), ("miniend_d", 5.875),
                       ("miniend_e", 5.625)):
        rows = [{"step": s, "grad_norm/encoder": 0.1 * s, "grad_norm/decoder": 0.2 * s} for s in (5, 10)]
        rows.append({"step": 10, "eval/ground_truth": loss})
        (root / name).mkdir(parents=True)
        (root / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / name / "done.json").write_text("{}")
    sst2 = {"teacher": [80.0, 81.0, 79.0], "random_init": [60.0, 62.0, 61.0], "scratch": [66.0, 65.0, 68.0],
            "miniend_e": [70.0, 69.5, 72.0]}
    stsb = {"teacher": [40.0, 42.0, 41.0], "random_init": [float("nan"), 5.0, 4.0], "scratch": [20.0, 22.0, 18.0]}
    for model, scores in sst2.items():
        for seed, value in enumerate(scores):
            _finished(root, f"downstream/{model}/sst2_2k_s{seed}",
                      results={"results": {"glue_sst2": {"accuracy": value}}})
    for model, scores in stsb.items():
        for seed, value in enumerate(scores):
            _finished(root, f"downstream/{model}/stsb_s{seed}",
                      results={"results": {"glue_stsb": {"pearson_corrcoef": value, "spearman_corrcoef": value}}})
    (root / "times.jsonl").write_text(json.dumps({"stage": "miniend_e", "seconds": 90.0, "rc": 0}) + "\n"
                                      + json.dumps({"stage": "miniend_e", "seconds": 30.0, "rc": 0}) + "\n")
    experiment.report(str(root), str(tmp_path / "figures"))

    collected = json.loads((root / "results.json").read_text())
    assert json.loads((tmp_path / "figures" / "results.json").read_text()) == collected
    models = {m["name"]: m for m in collected["models"]}
    assert list(models) == [name for name, _ in experiment.MODELS]
    assert 6 < models["teacher"]["forward_flops"] / models["scratch"]["forward_flops"] < 7  # half width, depth
    assert models["random_init"]["params"] == models["scratch"]["params"]
    e = models["miniend_e"]["downstream"]["sst2_2k"]
    assert e["scores"] == sst2["miniend_e"] and e["n"] == 3
    assert e["mean"] == pytest.approx(70.5) and e["std"] == pytest.approx(np.std([70.0, 69.5, 72.0], ddof=1))
    reference = scipy_stats.ttest_rel(sst2["miniend_e"], sst2["scratch"]).confidence_interval(0.95)
    assert (e["vs_scratch"]["low"], e["vs_scratch"]["high"]) == (pytest.approx(reference.low),
                                                                pytest.approx(reference.high))
    assert e["vs_scratch"]["significant"]
    random_stsb = models["random_init"]["downstream"]["stsb"]
    assert random_stsb["scores"] == [0.0, 5.0, 4.0]  # a constant prediction's undefined correlation: no skill
    assert models["l_imp"]["downstream"] == {}  # no finetuning finished: no task, no empty entry
    assert all(entry["n"] == 3 for m in models.values() for entry in m["downstream"].values())
    check = collected["instrument"]
    assert check["sst2_2k"]["teacher_minus_random"] == pytest.approx(19.0)
    assert check["sst2_2k"]["scratch_minus_random"] == pytest.approx(5.3333333)
    pooled = np.sqrt(np.mean([np.var(sst2[m], ddof=1) for m in ("teacher", "random_init", "scratch")]))
    assert check["sst2_2k"]["pooled_std"] == pytest.approx(pooled)

    text = (root / "results.md").read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    cells = lines["MiniEnD-E"].split(" | ")
    assert cells[3] == "5.625" and cells[4] == "70.5 ± 1.3 (n=3)" and cells[5].endswith("*")
    assert cells[-2] == "2.0"  # pretraining minutes over both attempts
    assert "6.125" in lines["L_Imp"] and "5.250" in lines["teacher"] and lines["L_Imp"].split(" | ")[4] == "-"
    assert "constant prediction" in text and "| sst2_2k | +19.0 | +5.3 |" in text
    assert (tmp_path / "figures" / "results_grad_norms.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "results_heldout.png").stat().st_size > 10_000


def test_a_stage_stopped_before_its_last_step_is_not_marked_done(tmp_path, monkeypatch):
    """A run stopped by SIGTERM or SIGINT checkpoints its current step and exits 0, also when the signal
    comes during its final evaluation, after the last step's checkpoint: the runner must not take it for
    finished (done.json would skip it forever, and its scores would be missing or an unfinished model's)."""
    reached = {"step": 5, "evaluated": False}

    def stopped_run(command, log):
        workdir = command[-1].split("=", 1)[1]
        os.makedirs(os.path.join(workdir, "checkpoints", str(reached["step"])), exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump({"mode": "distill", "train": {"steps": 10}}, f)
        with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": reached["step"], "loss": 1.0}) + "\n")
            if reached["evaluated"]:
                f.write(json.dumps({"step": reached["step"], "eval/ground_truth": 1.0}) + "\n")
            f.write('{"step": 11, "lo')  # a line cut by a kill: readers skip it
        return 0

    monkeypatch.setattr(experiment, "_run_forwarding_signals", stopped_run)
    with pytest.raises(SystemExit, match=r"stage exited before its last step.*resumes from its checkpoint"):
        experiment.run_stage(str(tmp_path), "stage", ["--config=configs/experiments/teacher.py"])
    reached["step"] = 10  # stopped during the final evaluation: the last checkpoint exists, no final scores
    with pytest.raises(SystemExit, match=r"stage exited before its last step"):
        experiment.run_stage(str(tmp_path), "stage", ["--config=configs/experiments/teacher.py"])
    assert not (tmp_path / "stage" / "done.json").exists()
    reached["evaluated"] = True  # the same command again: the run resumes and finishes
    experiment.run_stage(str(tmp_path), "stage", ["--config=configs/experiments/teacher.py"])
    assert (tmp_path / "stage" / "done.json").exists()
    assert [r["stage"] for r in experiment.read_jsonl(str(tmp_path / "times.jsonl"))] == ["stage"] * 3


def test_the_runner_passes_a_signal_on_and_waits_for_the_checkpoint(tmp_path):
    """Ctrl-C or SIGTERM to the runner reaches the stage as SIGTERM and the runner waits for it to exit
    (subprocess.call killed it with SIGKILL after 0.25 s, losing the step being checkpointed)."""
    import signal
    import subprocess
    import sys
    import time
    from tests.conftest import ROOT
    script = tmp_path / "stage.py"
    script.write_text("import signal, sys, time\n"
                      "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1.0), print('checkpointed'), sys.exit(0)))\n"
                      "print('ready', flush=True)\n"
                      "time.sleep(60)\n")
    runner = tmp_path / "runner.py"
    runner.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                      "from miniend_jax import experiment\n"
                      f"log = open({str(tmp_path / 'stage.log')!r}, 'w')\n"
                      f"rc = experiment._run_forwarding_signals([sys.executable, {str(script)!r}], log)\n"
                      "print('rc', rc, flush=True)\n")
    process = subprocess.Popen([sys.executable, str(runner)], stdout=subprocess.PIPE, text=True)
    log, deadline = tmp_path / "stage.log", time.time() + 60
    while time.time() < deadline and not (log.exists() and "ready" in log.read_text()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=60)
    assert "rc 0" in stdout and "checkpointed" in log.read_text()

@pytest.mark.parametrize("flag", ["--workdir", "--docs"])
def test_a_bucket_folder_is_refused_before_anything_is_written(flag, tmp_path, monkeypatch):
    from miniend_jax import experiment
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=rf"{flag}=gs://bucket/x: the experiment runs its stages on this machine"):
        experiment.main([flag, "gs://bucket/x"])
    assert os.listdir(tmp_path) == []
