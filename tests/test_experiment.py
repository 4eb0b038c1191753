"""The miniature comparison (configs/experiments/, miniend_jax/experiment.py): every config constructs and runs
one real step (teachers and checkpoints replaced by random models of the same shapes, short sequences), and
the runner covers every config, skips finished stages, and stops on a failed one."""

import glob
import importlib
import json
import math
import os

import pytest

from miniend_jax import experiment
from miniend_jax.distill.objectives import OBJECTIVES
from miniend_jax.modes import run
from miniend_jax.plot import read_metrics
from tests.conftest import ROOT

NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(str(ROOT / "configs" / "experiments" / "*.py"))
               if not p.endswith(("__init__.py", "common.py")))


def _one_step(config):
    """The same config, one step on 2 short sequences, models of the same shapes with random weights."""
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
        config.model.overrides.update(importlib.import_module("configs.experiments.common").STUDENT_SHAPE)
        config.tasks.eval_examples = 2
        config.tasks.inputs_length = min(config.tasks.inputs_length, 64)
        config.decode.max_length = 4
    else:
        config.data.inputs_length = 32
        config.data.files = str(ROOT.parent / "shared/data/enwiki_2015_extract/AA/wiki_0[0-2].gz")
        config.data.validation_files = 1
        config.teacher.source = "preset"  # the teacher's shape, random weights
    return config


@pytest.mark.parametrize("name", NAMES)
def test_experiment_config_runs_one_step(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = _one_step(importlib.import_module(f"configs.experiments.{name}").get_config())
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
        config = args[0].removeprefix("--config=")
        assert os.path.isfile(ROOT / config), config
        used.add(os.path.basename(config)[:-3])
    assert used == set(NAMES)
    names = [name for name, _ in experiment.stages("root")]
    assert names.index("teacher") == 0 and len(names) == len(set(names))
    assert all("--config.teacher.path=root/teacher" in args for name, args in experiment.stages("root")
               if name in dict(experiment.ROWS) and name != "scratch")


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


def test_report_tables_what_the_stages_wrote(tmp_path, monkeypatch):
    """The table holds each finished stage's numbers; unfinished stages show '-'; both figures are written."""
    monkeypatch.chdir(ROOT)
    root = tmp_path / "experiment"
    for name, loss in (("teacher", 5.25), ("l_imp", 6.125), ("miniend_d", 5.875), ("miniend_e", 5.625)):
        (root / name).mkdir(parents=True)
        rows = [{"step": s, "grad_norm/encoder": 0.1 * s, "grad_norm/decoder": 0.2 * s} for s in (5, 10)]
        rows.append({"step": 10, "eval/ground_truth": loss})
        (root / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / name / "done.json").write_text("{}")
    glue = {"results": {"glue_cola": {"matthews_corrcoef": 3.25}, "glue_sst2": {"accuracy": 61.5},
                        "glue_mrpc": {"f1": 80.5, "accuracy": 67.5},
                        "glue_stsb": {"pearson_corrcoef": 12.5, "spearman_corrcoef": 11.5},
                        "glue_rte": {"accuracy": 53.5}}, "paper_glue_score": 51.75}
    (root / "downstream" / "miniend_e_glue").mkdir(parents=True)
    (root / "downstream" / "miniend_e_glue" / "results.json").write_text(json.dumps(glue))
    (root / "downstream" / "miniend_e_glue" / "done.json").write_text("{}")
    (root / "times.jsonl").write_text(json.dumps({"stage": "miniend_e", "seconds": 90.0, "rc": 0}) + "\n"
                                      + json.dumps({"stage": "miniend_e", "seconds": 30.0, "rc": 0}) + "\n")
    experiment.report(str(root), str(tmp_path / "figures"))
    lines = {line.split(" | ")[0].strip("| "): line for line in (root / "results.md").read_text().splitlines()}
    e = lines["MiniEnD-E"].split(" | ")
    assert e[3:11] == ["5.625", "3.2", "61.5", "80.5 / 67.5", "12.5 / 11.5", "53.5", "51.8", "- / - / -"]
    assert e[11] == "2.0"  # minutes over both attempts
    assert "6.125" in lines["L_Imp"] and "5.250" in lines["teacher"]
    assert lines["from scratch"].split(" | ")[3] == "-"
    assert "constant prediction" in (root / "results.md").read_text()
    records = json.loads((root / "results.json").read_text())
    assert [r["name"] for r in records] == [name for name, _ in experiment.MODELS]
    teacher, student = records[0], records[-1]
    assert 7 < teacher["forward_flops"] / student["forward_flops"] < 9
    assert (tmp_path / "figures" / "results_grad_norms.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "results_heldout.png").stat().st_size > 10_000
