"""Downstream metrics against scipy / scikit-learn and rouge-score, and against their definitions."""

import numpy as np
import pytest
from rouge_score import rouge_scorer
from scipy import stats
from sklearn import metrics as skm

from miniend_jax.evaluation import metrics

RNG = np.random.default_rng(0)
TARGETS = RNG.integers(0, 2, 200)
PREDICTIONS = np.where(RNG.random(200) < 0.7, TARGETS, 1 - TARGETS)


def test_accuracy_equals_sklearn():
    assert metrics.accuracy(TARGETS, PREDICTIONS)["accuracy"] == pytest.approx(
        100 * skm.accuracy_score(TARGETS, PREDICTIONS))


def test_f1_equals_sklearn_and_counts_invalid_predictions_wrong():
    assert metrics.f1_with_invalid(TARGETS, PREDICTIONS)["f1"] == pytest.approx(
        100 * skm.f1_score(TARGETS, PREDICTIONS))
    # An invalid prediction (-1) is scored as the wrong class: here every invalid one is a missed positive
    # or a false positive, by hand: tp=1 fp=1 fn=2 -> F1 = 2 / (2 + 1 + 2) = 0.4.
    targets, predictions = np.array([1, 1, 0, 1, 0]), np.array([1, -1, -1, 0, 0])
    assert metrics.f1_with_invalid(targets, predictions)["f1"] == pytest.approx(40.0)


def test_matthews_equals_sklearn_and_the_formula():
    value = metrics.matthews_corrcoef(TARGETS, PREDICTIONS)["matthews_corrcoef"]
    assert value == pytest.approx(100 * skm.matthews_corrcoef(TARGETS, PREDICTIONS))
    tp = np.sum((TARGETS == 1) & (PREDICTIONS == 1))
    tn = np.sum((TARGETS == 0) & (PREDICTIONS == 0))
    fp = np.sum((TARGETS == 0) & (PREDICTIONS == 1))
    fn = np.sum((TARGETS == 1) & (PREDICTIONS == 0))
    formula = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert value == pytest.approx(100 * formula)


def test_correlations_equal_scipy():
    targets = RNG.uniform(0, 5, 100)
    predictions = np.round((targets + RNG.normal(0, 1, 100)) * 5) / 5
    assert metrics.pearson_corrcoef(targets, predictions)["pearson_corrcoef"] == pytest.approx(
        100 * stats.pearsonr(targets, predictions)[0])
    assert metrics.spearman_corrcoef(targets, predictions)["spearman_corrcoef"] == pytest.approx(
        100 * stats.spearmanr(targets, predictions)[0])
    # Spearman is Pearson of the ranks (average ranks for ties).
    ranks = lambda x: stats.rankdata(x)
    assert metrics.spearman_corrcoef(targets, predictions)["spearman_corrcoef"] == pytest.approx(
        100 * np.corrcoef(ranks(targets), ranks(predictions))[0, 1])


PAIRS = [
    ("The cat sat on the mat. It was happy!", "A cat was sitting on the mat. The cat seemed happy."),
    ("Police arrested two men in London on Friday.", "Two men were arrested by police in London."),
    ("Shares rose 5% after the results. Analysts expect more gains.", "Results lifted shares by 5%."),
]


def test_rouge_equals_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    targets, predictions = zip(*PAIRS)
    ours = metrics.rouge(targets, predictions)
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        expected = np.mean([scorer.score("\n".join(metrics.split_sentences(t)),
                                         "\n".join(metrics.split_sentences(p)))[name].fmeasure
                            for t, p in PAIRS])
        assert ours[name] == pytest.approx(100 * expected)
    # Sentence splitting only matters to ROUGE-Lsum: the others equal scoring the raw strings.
    raw = np.mean([scorer.score(t, p)["rouge1"].fmeasure for t, p in PAIRS])
    assert ours["rouge1"] == pytest.approx(100 * raw)
    assert metrics.rouge(["the same words"], ["the same words"])["rougeLsum"] == pytest.approx(100.0)


def test_sentence_splitting():
    assert metrics.split_sentences('He said "Go." Then he left! Did he? 3 people saw it.') == [
        'He said "Go."', "Then he left!", "Did he?", "3 people saw it."]
    assert metrics.split_sentences("e.g. lower case after a dot stays. Next one") == [
        "e.g. lower case after a dot stays.", "Next one"]
    assert metrics.split_sentences("line one\nline two") == ["line one", "line two"]


# The same two sentences, swapped in the prediction, written as each kind of summarization data has them.
SWAPPED = {
    "lower_cased_tokenized": ("the cat sat on the mat . the dog ran in the park .",  # CNN/DM, XSum as T5 sees them
                              ["the cat sat on the mat .", "the dog ran in the park ."]),
    "lower_cased": ("the cat sat on the mat. the dog ran in the park.",
                    ["the cat sat on the mat.", "the dog ran in the park."]),
    "cased": ("The cat sat on the mat. The dog ran in the park!",
              ["The cat sat on the mat.", "The dog ran in the park!"]),
    "abbreviations": ("Mr. Smith met Dr. J. Jones in the U.S. on Monday. they left at 3 p.m. on Tuesday.",
                      ["Mr. Smith met Dr. J. Jones in the U.S. on Monday.", "they left at 3 p.m. on Tuesday."]),
}


@pytest.mark.parametrize("kind", sorted(SWAPPED))
def test_rouge_lsum_splits_sentences_of_every_kind_of_text(kind):
    """ROUGE-Lsum of a prediction with the target's sentences swapped is 100, as rouge-score gives on the
    sentences split by hand; ROUGE-L (one sequence) is lower. The old splitter (a capital or digit must
    follow) left lower-cased text whole: Lsum 50 = ROUGE-L."""
    target, sentences = SWAPPED[kind]
    assert metrics.split_sentences(target) == sentences
    prediction = " ".join(sentences[::-1])
    scorer = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True)
    expected = scorer.score("\n".join(sentences), "\n".join(sentences[::-1]))
    ours = metrics.rouge([target], [prediction])
    assert ours["rougeLsum"] == pytest.approx(100 * expected["rougeLsum"].fmeasure) == pytest.approx(100.0)
    assert ours["rougeL"] < 90.0


def test_undefined_scores_are_left_out_of_the_aggregates_and_named():
    """A constant STS-B prediction has no Pearson correlation (NaN): the aggregates leave the task out and
    say so instead of turning into NaN."""
    from miniend_jax.evaluation.evaluator import aggregates, markdown_table
    from tasks.glue import results_by_glue_task
    stsb = {**metrics.pearson_corrcoef([1.0, 2.0, 3.0], [2.5, 2.5, 2.5]),
            **metrics.spearman_corrcoef([1.0, 2.0, 3.0], [2.5, 2.5, 2.5])}
    assert np.isnan(stsb["pearson_corrcoef"])
    results = {"glue_sst2": {"accuracy": 90.0}, "glue_stsb": stsb, "glue_rte": {"accuracy": 60.0}}
    summary = aggregates(results_by_glue_task(results))
    assert summary["glue_average"] == pytest.approx(75.0)
    assert summary["paper_glue_score"] == pytest.approx(75.0)
    assert "stsb/spearman_corrcoef" in summary["paper_glue_score_missing"]
    assert summary["undefined_scores"] == ["stsb/pearson_corrcoef", "stsb/spearman_corrcoef"]
    table = markdown_table(results, summary)
    assert "T5's average of the tasks above (MNLI-m/mm one task; no WNLI, AX) (without stsb: undefined) | 75.00" in table
    assert "| GLUE | paper's score" in table and "| nan |" not in table.split("GLUE |", 1)[1]


def test_glue_scores():
    results = {"sst2": {"accuracy": 90.0}, "mrpc": {"f1": 80.0, "accuracy": 70.0}, "stsb": {
        "pearson_corrcoef": 60.0, "spearman_corrcoef": 50.0}, "cola": {"matthews_corrcoef": 40.0}}
    assert metrics.glue_average(results) == pytest.approx(np.mean([90, 75, 55, 40]))
    paper, missing = metrics.paper_glue_score(results)
    assert paper == pytest.approx(np.mean([90, 80, 50]))
    assert "rte/accuracy" in missing and len(missing) == 5


def test_glue_average_is_t5s():
    """T5's `compute_avg_glue`, written out: mean over CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE of
    each group's mean metric, MNLI-m and MNLI-mm one group, WNLI and AX not counted."""
    results = {"cola": {"matthews_corrcoef": 40.0}, "sst2": {"accuracy": 90.0},
               "mrpc": {"f1": 80.0, "accuracy": 70.0}, "stsb": {"pearson_corrcoef": 60.0, "spearman_corrcoef": 50.0},
               "qqp": {"f1": 72.0, "accuracy": 78.0}, "mnli_matched": {"accuracy": 84.0},
               "mnli_mismatched": {"accuracy": 82.0}, "qnli": {"accuracy": 88.0}, "rte": {"accuracy": 66.0},
               "wnli": {"accuracy": 10.0}, "ax": {"matthews_corrcoef": 5.0}}
    expected = np.mean([40.0, 90.0, (80 + 70) / 2, (60 + 50) / 2, (72 + 78) / 2, (84 + 82) / 2, 88.0, 66.0])
    assert metrics.glue_average(results) == pytest.approx(expected)
