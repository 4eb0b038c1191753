"""The demo's inputs, built offline from what Python installs (its training stages are the CLI's,
tested elsewhere; `make demo` runs them)."""

import os

import pytest

from miniend_jax import demo
from miniend_jax.checkpoints.tokenizer import train_sentencepiece
from tasks import classification


def test_corpus_vocabulary_and_downstream_task(tmp_path):
    documents = demo.documentation_texts()
    assert len(documents) > 1000 and sum(s == "reference" for s, _ in documents) > 50
    corpus = demo.build_corpus(str(tmp_path), documents)
    train = open(os.path.join(corpus, "a_train.txt"), encoding="utf-8").read().splitlines()
    heldout = open(os.path.join(corpus, "b_heldout.txt"), encoding="utf-8").read().splitlines()
    assert len(train) > 5000 and len(heldout) > 300
    assert not set(heldout) & set(train)

    model = str(tmp_path / "spm.model")
    train_sentencepiece(os.path.join(corpus, "a_train.txt"), model, 500)
    import sentencepiece as spm
    processor = spm.SentencePieceProcessor(model_file=model)
    assert processor.get_piece_size() == 500
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (0, 1, 2, -1)
    assert processor.decode(processor.encode(heldout[0])) == heldout[0]

    folder = str(tmp_path / "docs_package")
    n_train, n_dev, labels = demo.build_package_task(documents, folder)
    assert len(labels) == 6 and n_train > 3 * n_dev > 150
    dev = classification.read_split(folder, "validation")
    assert {label for _, label in dev} == set(labels)
    train_texts = {text for text, _ in classification.read_split(folder, "train")}
    assert sum(text in train_texts for text, _ in dev) < 0.05 * len(dev)


def test_results_table_reports_seeds_and_tells_noise_from_a_difference():
    """Mean ± sample std over seeds (numpy); paired differences with Student's t interval (scipy), marked
    significant only when the interval excludes 0."""
    import numpy as np
    from scipy import stats

    accuracy = {"teacher": [80.0, 82.0, 81.0], "miniend_e": [70.0, 75.0, 66.0], "scratch": [71.0, 69.0, 73.0],
                "random_init": [60.0, 62.0, 61.5]}
    scores = {row: {seed: {"accuracy": a, "f1_macro": a / 2} for seed, a in enumerate(values)}
              for row, values in accuracy.items()}
    forward = dict.fromkeys(accuracy, 2.6e7)
    table = demo.results_table(scores, forward, {"teacher": "4.400"}).splitlines()
    rows = {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in table[2:])}
    assert set(rows) == {demo.ROW_NAMES[r] for r in accuracy}

    def interval(a, b):
        d = np.subtract(a, b)
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        return d.mean(), d.mean() - half, d.mean() + half

    for row, values in accuracy.items():
        cells = rows[demo.ROW_NAMES[row]]
        assert cells[3] == f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"
        if row != "random_init":
            mean, low, high = interval(values, accuracy["random_init"])
            verdict = "significant" if low > 0 or high < 0 else "within noise"
            assert cells[5] == f"{mean:+.1f} [{low:+.1f}, {high:+.1f}] {verdict}"
    assert rows[demo.ROW_NAMES["teacher"]][5].endswith(" significant")
    assert rows[demo.ROW_NAMES["miniend_e"]][6].endswith("within noise")  # -0.7 with a spread of 4.5
    assert rows[demo.ROW_NAMES["scratch"]][2] == "-" and rows[demo.ROW_NAMES["teacher"]][2] == "4.400"


def test_a_stage_stopped_by_a_signal_stops_the_demo(tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) or SIGTERM stops a run after checkpointing the current step and returns: the demo
    must stop there, not start the next stage from an unfinished model."""
    import json

    import ml_collections
    from miniend_jax import modes
    config = ml_collections.ConfigDict({"mode": "pretrain", "train": {"steps": 10}})
    workdir = tmp_path / "teacher"

    def run_until(step):
        def run(config, workdir):
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, "eval/ground_truth": 4.0}) + "\n")
        return run

    monkeypatch.setattr(modes, "run", run_until(4))
    with pytest.raises(SystemExit, match=r"\[teacher\] stopped before its 10 steps.*resumes there"):
        demo._stage("teacher", str(workdir), config, log=lambda line: None)
    monkeypatch.setattr(modes, "run", run_until(10))
    lines = []
    demo._stage("teacher", str(workdir), config, log=lines.append)
    assert lines[-1].startswith("[teacher]") and lines[-1].endswith(" s")
    demo._stage("teacher", str(workdir), config, log=lines.append)
    assert lines[-1] == f"[teacher] already done in {workdir}"
