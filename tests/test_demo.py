"""The demo's inputs, built offline from what Python installs (its training stages are the CLI's,
tested elsewhere; `make demo` runs them)."""

import os

import pytest

from miniend_jax import demo
from miniend_jax.checkpoints.tokenizer import train_sentencepiece
from tasks import classification
from tests.demo_stages import fake_run


def test_corpus_vocabulary_and_downstream_task(tmp_path):
    docstrings = demo.stdlib_docstrings()
    train_rows, dev_rows = demo.module_task_rows(docstrings, modules=12, dev_every=3)
    dev_texts = {text for text, _ in dev_rows}
    documents = demo.documentation_texts(docstrings, exclude=dev_texts)
    assert len(documents) > 1000 and sum(s == "reference" for s, _ in documents) > 50
    corpus = demo.build_corpus(str(tmp_path), documents, exclude=dev_texts)
    train = open(os.path.join(corpus, "a_train.txt"), encoding="utf-8").read().splitlines()
    heldout = open(os.path.join(corpus, "b_heldout.txt"), encoding="utf-8").read().splitlines()
    assert len(train) > 5000 and len(heldout) > 300
    assert not set(heldout) & set(train)
    assert not dev_texts & set(train + heldout)  # no model pretrains on the text it is scored on

    model = str(tmp_path / "spm.model")
    train_sentencepiece(os.path.join(corpus, "a_train.txt"), model, 500)
    import sentencepiece as spm
    processor = spm.SentencePieceProcessor(model_file=model)
    assert processor.get_piece_size() == 500
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (0, 1, 2, -1)
    assert processor.decode(processor.encode(heldout[0])) == heldout[0]

    folder = str(tmp_path / "docs_module")
    n_train, n_dev, labels = demo.write_task(folder, train_rows, dev_rows)
    # Enough dev examples that one is 0.15 points: a difference of 3 points is 20 examples.
    assert len(labels) == 12 and n_dev >= 600 and n_train > 1.8 * n_dev
    dev = classification.read_split(folder, "validation")
    assert len(dev) == n_dev and {label for _, label in dev} == set(labels)
    train_texts = {text for text, _ in classification.read_split(folder, "train")}
    assert not train_texts & {text for text, _ in dev}
    counts = [sum(label == name for _, label in dev) for name in labels]
    assert max(counts) < 0.3 * n_dev and min(counts) >= 25


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


def _stage(tmp_path, name, after=()):
    import ml_collections
    config = ml_collections.ConfigDict({"mode": "pretrain", "train": {"steps": 10}})
    return demo.Stage(name, str(tmp_path / name), config, after=after)


def test_stages_run_two_at_a_time_after_what_they_need(tmp_path):
    import json
    stages = [_stage(tmp_path, "teacher"), _stage(tmp_path, "scratch"),
              _stage(tmp_path, "student", after=("teacher",)), _stage(tmp_path, "other")]
    lines = []
    demo.run_stages(stages, 2, lines.append, runner=fake_run)
    times = {s.name: json.load(open(os.path.join(s.workdir, "times.json"))) for s in stages}
    assert times["student"][0] >= times["teacher"][1]                    # after the teacher finished
    assert times["scratch"][0] < times["teacher"][1]                      # beside it
    assert sum(name in line for line in lines for name in times if line.endswith(" s")) == 4
    # Finished stages are not run again.
    lines.clear()
    demo.run_stages(stages, 2, lines.append, runner=fake_run)
    assert all("already done" in line for line in lines) and len(lines) == 4


def test_a_stage_stopped_by_a_signal_stops_the_demo(tmp_path):
    """Ctrl-C (SIGINT) or SIGTERM stops a run after checkpointing the current step and returns: the demo
    must stop there, not start the stages that need that model from an unfinished one."""
    stages = [_stage(tmp_path, "stops_early"), _stage(tmp_path, "student", after=("stops_early",))]
    lines = []
    with pytest.raises(SystemExit, match=r"stopped before every stage finished.*resumes there"):
        demo.run_stages(stages, 2, lines.append, runner=fake_run)
    assert not os.path.exists(stages[1].workdir)
