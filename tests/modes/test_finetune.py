"""Modes finetune and evaluate end to end on SST-2 from ../shared/data: the validation loss falls, the best
checkpoint and results.json are written, and `evaluate` on the kept checkpoint reproduces its score."""

import json
import os

import pytest

from miniend_jax.errors import ConfigError
from miniend_jax.modes import run
from tests.conftest import ROOT, config_with


def _config(**changes):
    return config_with("tiny_finetune", **changes)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("finetune"))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        run(_config(), workdir)
    finally:
        os.chdir(cwd)
    return workdir


def test_finetuning_lowers_validation_loss_and_writes_results(finetuned):
    rows = [json.loads(line) for line in open(os.path.join(finetuned, "metrics.jsonl"))]
    evals = [r for r in rows if "eval/ground_truth" in r]
    assert [r["step"] for r in evals] == [20, 40]
    first_train = next(r["loss"] for r in rows if "loss" in r)
    assert evals[-1]["eval/ground_truth"] < 0.6 * first_train
    assert all("glue_sst2/accuracy" in r for r in evals)
    results = json.load(open(os.path.join(finetuned, "results.json")))
    accuracy = results["results"]["glue_sst2"]["accuracy"]
    assert 0.0 <= accuracy <= 100.0
    assert results["paper_glue_score"] == pytest.approx(accuracy)
    best = json.load(open(os.path.join(finetuned, "best.json")))
    assert best["value"] == pytest.approx(accuracy) and best["step"] in (20, 40)
    assert os.path.exists(os.path.join(finetuned, "best", "config.json"))
    assert "| glue_sst2 | accuracy |" in open(os.path.join(finetuned, "results.md")).read()


def test_every_evaluation_is_logged_in_t5x_layout(finetuned):
    """seqio's loggers under `inference_eval/`: per step a JSONL of every scored example whose predictions
    give the step's accuracy, the metrics as JSONL and as TensorBoard scalars."""
    import glob

    import tensorflow as tf
    log_dir = os.path.join(finetuned, "inference_eval")
    rows = [json.loads(line) for line in open(os.path.join(finetuned, "metrics.jsonl"))]
    scores = {r["step"]: r["glue_sst2/accuracy"] for r in rows if "glue_sst2/accuracy" in r}
    logged = [json.loads(line) for line in open(os.path.join(log_dir, "glue_sst2-metrics.jsonl"))]
    assert {r["step"]: r["accuracy"] for r in logged} == pytest.approx(scores)
    for step, accuracy in scores.items():
        examples = [json.loads(line) for line in open(os.path.join(log_dir, f"glue_sst2-{step:06}.jsonl"))]
        assert len(examples) == _config().tasks.eval_examples
        assert all(e["input"]["inputs_pretokenized"].startswith("sst2 sentence: ") for e in examples)
        assert 100.0 * sum(e["prediction"] == e["target"] for e in examples) / len(examples) == pytest.approx(accuracy)
    events = glob.glob(os.path.join(log_dir, "glue_sst2", "events.out.tfevents.*"))
    summaries = {(event.step, value.tag): float(tf.make_ndarray(value.tensor))
                 for path in events for event in tf.compat.v1.train.summary_iterator(path)
                 for value in event.summary.value}
    assert {step: summaries[(step, "eval/accuracy")] for step in scores} == pytest.approx(scores)


def test_evaluate_mode_reproduces_the_best_checkpoints_score(finetuned, tmp_path):
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        payload = run(_config(**{"mode": "evaluate", "model.source": "hf",
                                 "model.path": os.path.join(finetuned, "best")}), str(tmp_path))
    finally:
        os.chdir(cwd)
    best = json.load(open(os.path.join(finetuned, "best.json")))
    assert payload["results"]["glue_sst2"]["accuracy"] == pytest.approx(best["value"])
    assert os.path.exists(tmp_path / "results.json") and os.path.exists(tmp_path / "results.md")
    assert os.path.exists(tmp_path / "inference_eval" / "glue_sst2-000000.jsonl")


def test_a_hf_dataset_task_trains_and_scores_like_its_glue_twin(finetuned, tmp_path):
    """SST-2's first rows as parquet, registered as `hf_sst2` from `tasks.hf`: finetuning reads it and
    reports its named metrics; the kept checkpoint scores it exactly as it scores `glue_sst2` on the same
    rows, and macro F1 is scikit-learn's over the logged predictions."""
    from sklearn.metrics import f1_score

    from tests.tasks.test_hf_tasks import SST2, write_sst2_parquet
    hf = {"sst2": dict(SST2, path=write_sst2_parquet(tmp_path, 200, 64))}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        run(_config(**{"tasks.hf": hf, "tasks.train": "hf_sst2", "tasks.eval": "hf_sst2", "train.steps": 2,
                       "train.eval_every": 0, "train.eval_batches": 1}), str(tmp_path / "train"))
        payload = run(_config(**{"mode": "evaluate", "model.source": "hf", "model.path": os.path.join(finetuned, "best"),
                                 "tasks.hf": hf, "tasks.eval": "hf_sst2,glue_sst2"}), str(tmp_path / "eval"))
    finally:
        os.chdir(cwd)
    best = json.load(open(tmp_path / "train" / "best.json"))
    assert (best["task"], best["metric"]) == ("hf_sst2", "accuracy")
    assert set(json.load(open(tmp_path / "train" / "results.json"))["results"]["hf_sst2"]) == {"accuracy", "f1_macro"}
    results = payload["results"]
    assert results["hf_sst2"]["accuracy"] == pytest.approx(results["glue_sst2"]["accuracy"])
    logged = [json.loads(line) for line in open(tmp_path / "eval" / "inference_eval" / "hf_sst2-000000.jsonl")]
    targets, predictions = [e["target"] for e in logged], [e["prediction"] for e in logged]
    assert len(logged) == 64
    assert results["hf_sst2"]["f1_macro"] == pytest.approx(
        100 * f1_score(targets, predictions, average="macro", labels=sorted(set(targets))))


@pytest.mark.parametrize("changes,message", [
    ({"tasks.train": "glue_nonexistent"}, r"tasks.train='glue_nonexistent' is not a registered Task"),
    ({"tasks.train": "glue_qqp"}, r"qqp split 'train': no train.tsv or train.jsonl"),
    ({"tasks.eval": "summ_xsum", "tasks.eval_split": "validation"}, r"xsum has no local split 'validation'"),
    ({"tasks.eval": ""}, r"tasks.eval='': name at least one Task"),
    ({"model.source": "hf", "model.path": "/nonexistent"}, r"model.path='/nonexistent'"),
    ({"decode.num_beams": 0}, r"decode.num_beams=0"),
    ({"decode.length_penalty_rule": "HF"}, r"decode.length_penalty_rule='HF': use 't5'"),
    ({"tasks.best_metric": "accuracy"}, r"tasks.best_metric='accuracy': use 'task/metric'"),
    ({"tasks.best_metric": "glue_sst2/f1"}, r"tasks.best_metric='glue_sst2/f1': glue_sst2 reports accuracy"),
    ({"tasks.best_metric": "glue_rte/accuracy"}, r"name one of the evaluated Tasks \(glue_sst2;"),
    ({"tasks.train": "glue_rte", "tasks.eval": "glue_rte", "tasks.targets_length": 3},
     r"tasks.targets_length=3 truncates the rte label 'not_entailment' \(\d+ tokens with EOS"),
    ({"tasks.eval": "glue_equal", "tasks.best_metric": "glue_equal/accuracy", "tasks.targets_length": 6},
     r"name one of the evaluated Tasks \(glue_cola, .*glue_stsb; a Mixture is scored as its Tasks\)"),
    ({"tasks.glue_dir": "/nonexistent"}, r"sst2 split 'train': no train.tsv .* in /nonexistent/SST-2"),
    ({"tasks.hf": {"sst2": dict(path="/nonexistent/{split}.parquet", inputs="{sentence}", targets="{label}",
                                metrics="accuracy")}, "tasks.train": "hf_sst2"},
     r"tasks.hf.sst2.path='/nonexistent/\{split\}.parquet' matches no file with \{split\} = train, validation"),
])
def test_bad_downstream_configs_stop_before_work(changes, message, tmp_path):
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with pytest.raises(ConfigError, match=message):
            run(_config(**changes), str(tmp_path))
    finally:
        os.chdir(cwd)
    assert os.listdir(tmp_path) == []


def test_a_mixture_as_eval_is_scored_as_its_tasks(tmp_path):
    """`tasks.eval` a Mixture: each of its Tasks is scored, and the best checkpoint is chosen by the first
    Task's main metric (this used to train to the first evaluation, then stop: 'glue_equal/rougeL is not
    among the scores')."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        run(_config(**{"tasks.eval": "glue_equal", "tasks.targets_length": 6, "tasks.eval_examples": 4, "train.steps": 2,
                       "train.eval_every": 0, "train.eval_batches": 1}), str(tmp_path))
    finally:
        os.chdir(cwd)
    results = json.load(open(tmp_path / "results.json"))["results"]
    assert {"glue_cola", "glue_sst2", "glue_stsb", "glue_rte"} <= set(results)
    best = json.load(open(tmp_path / "best.json"))
    assert (best["task"], best["metric"]) == ("glue_cola", "matthews_corrcoef")


class _ScriptedEvaluator:
    """Stands in for the decoding evaluator: returns the given STS-B Pearson scores in turn."""

    def __init__(self, values):
        self.values = list(values)

    def evaluate(self, params, step, should_stop=None):
        return {"glue_stsb": {"pearson_corrcoef": self.values.pop(0), "spearman_corrcoef": 1.0}}


def test_a_nan_score_is_never_the_best_checkpoint(tmp_path):
    """STS-B scores NaN (a constant prediction has no correlation), then 40, then 80: the best checkpoint
    is 40, then 80, also across a restart; a best.json holding NaN from an older run is not kept as best."""
    import jax
    import flax.linen as nn
    from miniend_jax.modes.finetune import BestCheckpoint
    from miniend_jax.models import T5Config, init_params
    config = _config(**{"tasks.eval": "glue_stsb", "tasks.best_metric": "glue_stsb/pearson_corrcoef"})
    model_config = T5Config(vocab_size=32128, d_model=8, d_kv=4, num_heads=2, d_ff=16, num_encoder_layers=1,
                            num_decoder_layers=1)
    params = nn.unbox(init_params(model_config, jax.random.PRNGKey(0)))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        (tmp_path / "best.json").write_text(json.dumps({"step": 5, "value": float("nan")}))
        best = BestCheckpoint(config, str(tmp_path), model_config)
        assert best.best is None
        best.evaluator = _ScriptedEvaluator([float("nan"), 40.0])
        best(None, params, 10)
        assert json.load(open(tmp_path / "best.json"))["step"] == 5  # the NaN evaluation saved nothing
        best(None, params, 20)
        assert json.load(open(tmp_path / "best.json"))["value"] == 40.0
        restarted = BestCheckpoint(config, str(tmp_path), model_config)
        restarted.evaluator = _ScriptedEvaluator([float("nan"), 80.0])
        restarted(None, params, 30)
        restarted(None, params, 40)
    finally:
        os.chdir(cwd)
    assert json.load(open(tmp_path / "best.json")) == {"step": 40, "task": "glue_stsb", "metric": "pearson_corrcoef",
                                                        "value": 80.0}


def test_sigterm_during_an_evaluation_stops_it_and_the_resume_runs_it_again(tmp_path):
    """A preempted VM has about 30 s: the signal stops the evaluation after its current batch (it used to
    finish the whole evaluation first), checkpoints the step and exits 0; the resume evaluates that step
    before training on. The evaluation here decodes all 872 SST-2 validation examples 8 at a time."""
    import signal
    import subprocess
    import sys
    import time
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "miniend_jax.main", "--config=tests/configs/tiny_finetune.py",
               f"--workdir={workdir}", "--config.tasks.eval_examples=0", "--config.decode.batch_size=8",
               "--config.train.async_checkpoints=False"]
    from miniend_jax.jsonl import read_jsonl
    log = open(tmp_path / "log.txt", "w+")  # files, not pipes: an unread pipe could fill and block the run
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    # Step 20's losses are logged just before its evaluation starts (train.eval_every=20); a line being
    # written is skipped by read_jsonl.
    while time.time() < deadline and process.poll() is None and not (
            metrics.exists() and any(r.get("step") == 20 for r in read_jsonl(str(metrics)))):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    log.close()
    stdout = stderr = (tmp_path / "log.txt").read_text()
    assert process.returncode == 0, stderr[-3000:]
    stopped = [l for l in stdout.splitlines() if l.startswith("stopped by signal SIGTERM during the evaluation")]
    assert stopped and "at step 20 (after " in stopped[0], stdout[-2000:]
    done, total = (int(n) for n in stopped[0].split("(after ")[1].split(" ")[0:3:2])
    assert done < total, stopped[0]
    assert sorted(n for n in os.listdir(workdir / "checkpoints") if n.isdigit()) == ["20"]
    rows = [json.loads(l) for l in metrics.read_text().splitlines()]
    assert not any("glue_sst2/accuracy" in r for r in rows) and not (workdir / "best.json").exists()

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint at step 20 (its interrupted evaluation runs first)" in resumed.stdout
    rows = [json.loads(l) for l in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows if "glue_sst2/accuracy" in r] == [20, 40]
    assert json.loads((workdir / "best.json").read_text())["step"] in (20, 40)


def test_evaluation_says_how_many_inputs_it_cuts(capsys, monkeypatch):
    """seqio cuts inputs to tasks.inputs_length silently; the evaluator counts them (reference: the lengths
    seqio's own pipeline gives without a cut) and says so once."""
    from miniend_jax import build, inputs, parallel
    from miniend_jax.evaluation.evaluator import DecodeSettings, TaskEvaluator, cut_inputs
    from miniend_jax.models.t5 import T5
    import seqio
    config = _config()
    monkeypatch.chdir(ROOT)
    inputs.register_tasks(config)
    task = seqio.get_mixture_or_task("glue_sst2")
    whole = [len(x["inputs"]) for x in task.get_dataset({"inputs": 100_000, "targets": 8}, split="validation",
                                                        shuffle=False, num_epochs=1).as_numpy_iterator()]
    for length in (16, 32, 64):
        assert cut_inputs("glue_sst2", "validation", length) == (sum(n > length for n in whole), len(whole), max(whole))
    assert cut_inputs("glue_sst2", "validation", 32, 64)[:2] == (sum(n > 32 for n in whole[:64]), 64)
    mesh = parallel.make_mesh(1, 1, 1)
    TaskEvaluator(["glue_sst2"], "validation", T5(build.model_config(config.model, "model")), mesh,
                  parallel.DEFAULT_RULES, inputs_length=32, targets_length=4, decode=DecodeSettings(), num_examples=64)
    expected = sum(n > 32 for n in whole[:64])
    assert f"eval: {expected} of 64 inputs of glue_sst2 validation are longer than tasks.inputs_length=32" in \
        capsys.readouterr().out


@pytest.mark.parametrize("changes,message", [
    ({"mode": "evaluate", "tasks.eval": "glue_rte"}, r"tasks.eval='glue_rte': split 'test' of glue_rte has no labels"),
    ({"mode": "evaluate", "tasks.eval": "glue_ax"}, r"split 'test' of glue_ax has no labels"),
    ({"mode": "evaluate", "tasks.eval": "glue_submission"}, r"tasks.eval='glue_submission': split 'test' of glue_\w+ "),
    ({"mode": "finetune", "tasks.train": "glue_rte", "tasks.eval": "glue_rte"}, r"split 'test' of glue_rte has no"),
    ({"mode": "finetune", "tasks.train": "glue_rte", "tasks.eval": "summ_xsum", "tasks.best_metric": ""},
     r"tasks.train='glue_rte': split 'test' of glue_rte has no labels"),  # its validation loss
])
def test_scoring_an_unlabelled_split_stops_before_loading(tmp_path, changes, message):
    """GLUE's test splits have no labels: evaluate and finetune (its scores and its validation loss) refuse
    them, pointing at mode=infer, before any weight is read or anything written."""
    from tests.conftest import SHARED_DATA
    from tests.tasks.test_glue import write_test_files
    write_test_files(tmp_path / "glue")
    (tmp_path / "glue" / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n")
    config = _config(**{"tasks.glue_dir": str(tmp_path / "glue"), "tasks.summarization_dir": str(SHARED_DATA),
                        "tasks.eval_split": "test", "tasks.targets_length": 8, **changes})
    with pytest.raises(ConfigError, match=message + r".*--config.mode=infer"):
        run(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w" / "results.json") and not os.path.exists(tmp_path / "w" / "checkpoints")


def test_a_hf_split_without_labels_is_not_scored(tmp_path):
    """A `tasks.hf` classification split whose labels are all -1 (GLUE's test splits on the HF hub)."""
    import pandas

    from miniend_jax import inputs
    from tasks import hf_tasks
    from tests.conftest import SPIECE
    pandas.DataFrame({"sentence": ["good", "bad"], "label": [1, 0]}).to_parquet(tmp_path / "validation.parquet")
    pandas.DataFrame({"sentence": ["fine", "dull"], "label": [-1, -1]}).to_parquet(tmp_path / "test.parquet")
    spec = dict(path=str(tmp_path / "{split}.parquet"), inputs="sst2 sentence: {sentence}", targets="{label}",
                label_names="negative,positive", metrics="accuracy")
    hf_tasks.register("unlabelled_sst2", spec, str(SPIECE))
    assert inputs.unlabelled("hf_unlabelled_sst2", "test") and not inputs.unlabelled("hf_unlabelled_sst2", "validation")
    config = _config(**{"mode": "evaluate", "tasks.hf": {"unlabelled_sst2": spec}, "tasks.eval": "hf_unlabelled_sst2",
                        "tasks.eval_split": "test"})
    with pytest.raises(ConfigError, match=r"split 'test' of hf_unlabelled_sst2 has no labels"):
        run(config, str(tmp_path / "w"))


def test_evaluate_does_not_overwrite_a_finetuning_runs_results(finetuned):
    """evaluate into a finetuning workdir replaced its best results.json (which the experiment reads)."""
    before = open(os.path.join(finetuned, "results.json")).read()
    with pytest.raises(ConfigError, match=r"holds a finetuning run \(best.json\), whose results.json"):
        run(_config(**{"mode": "evaluate", "model.source": "hf", "model.path": os.path.join(finetuned, "best")}),
            finetuned)
    assert open(os.path.join(finetuned, "results.json")).read() == before
