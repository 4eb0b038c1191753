"""Downstream metrics: GLUE's (as GLUE defines them, via scipy and scikit-learn), ROUGE (rouge-score), and
the aggregate GLUE scores. Every function takes `(targets, predictions)` lists as seqio metric functions
do and returns `{name: score}` on a 0-100 scale, as T5 reports them.

Classification predictions are class ids after postprocessing; a prediction the model produced that is no
label at all is -1 and counts as wrong (T5's convention).
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np


def _arrays(targets, predictions):
    return np.asarray(targets), np.asarray(predictions)


def accuracy(targets: Sequence, predictions: Sequence) -> dict:
    t, p = _arrays(targets, predictions)
    return {"accuracy": 100.0 * float(np.mean(t == p))}


def f1_with_invalid(targets: Sequence, predictions: Sequence) -> dict:
    """Binary F1 of the positive class; a prediction that is neither 0 nor 1 counts as wrong."""
    from sklearn.metrics import f1_score
    t, p = _arrays(targets, predictions)
    p = p.copy()
    invalid = (p != 0) & (p != 1)
    p[invalid] = 1 - t[invalid]
    return {"f1": 100.0 * float(f1_score(t, p))}


def matthews_corrcoef(targets: Sequence, predictions: Sequence) -> dict:
    from sklearn.metrics import matthews_corrcoef as mcc
    t, p = _arrays(targets, predictions)
    return {"matthews_corrcoef": 100.0 * float(mcc(t, p))}


def pearson_corrcoef(targets: Sequence, predictions: Sequence) -> dict:
    from scipy.stats import pearsonr
    t, p = _arrays(targets, predictions)
    return {"pearson_corrcoef": 100.0 * float(pearsonr(t, p)[0])}


def spearman_corrcoef(targets: Sequence, predictions: Sequence) -> dict:
    from scipy.stats import spearmanr
    t, p = _arrays(targets, predictions)
    return {"spearman_corrcoef": 100.0 * float(spearmanr(t, p)[0])}


# --------------------------------------------------------------------------------------------
# ROUGE
# --------------------------------------------------------------------------------------------
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: a split after `.`, `!` or `?` (and closing quotes) before a capital or digit.

    ROUGE-Lsum scores summary-level LCS over sentences, which rouge-score reads as newline-separated;
    the summarization literature splits with NLTK's punkt model, whose data is a download. This rule
    is the offline stand-in; text that already has newlines keeps them.
    """
    if "\n" in text.strip():
        return [s.strip() for s in text.split("\n") if s.strip()]
    text = text.strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    pieces = [text[start:end] for start, end in zip([0] + ends, ends + [len(text)])]
    return [p.strip() for p in pieces if p.strip()]


def rouge(targets: Sequence[str], predictions: Sequence[str]) -> dict:
    """Mean F-measure of ROUGE-1/2/L and ROUGE-Lsum with Porter stemming (rouge-score), 0-100."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for target, prediction in zip(targets, predictions, strict=True):
        scores = scorer.score("\n".join(split_sentences(target)), "\n".join(split_sentences(prediction)))
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    n = max(len(targets), 1)
    return {name: 100.0 * value / n for name, value in totals.items()}


# --------------------------------------------------------------------------------------------
# Aggregates over GLUE tasks
# --------------------------------------------------------------------------------------------
# The paper's "GLUE score" (METHOD.md): the mean of these eight numbers.
PAPER_GLUE_SCORE = (("sst2", "accuracy"), ("mrpc", "f1"), ("stsb", "spearman_corrcoef"), ("qqp", "f1"),
                    ("mnli_matched", "accuracy"), ("mnli_mismatched", "accuracy"), ("qnli", "accuracy"),
                    ("rte", "accuracy"))


def glue_average(results: Mapping[str, Mapping[str, float]]) -> float | None:
    """The standard GLUE average: per task the mean of its metrics, then the mean over tasks present
    (MNLI matched and mismatched count as two tasks, as in the T5 paper's tables)."""
    per_task = [float(np.mean(list(scores.values()))) for scores in results.values() if scores]
    return float(np.mean(per_task)) if per_task else None


def paper_glue_score(results: Mapping[str, Mapping[str, float]]) -> tuple[float | None, list[str]]:
    """(mean of the paper's eight numbers that are present, the ones missing)."""
    present, missing = [], []
    for task, metric in PAPER_GLUE_SCORE:
        if task in results and metric in results[task]:
            present.append(results[task][metric])
        else:
            missing.append(f"{task}/{metric}")
    return (float(np.mean(present)) if present else None), missing
