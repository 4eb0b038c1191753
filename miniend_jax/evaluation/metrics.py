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


def f1_macro(targets: Sequence, predictions: Sequence) -> dict:
    """F1 averaged over the classes that occur in `targets` (scikit-learn's macro average); a prediction
    that is no label (-1) counts as wrong for its target's class."""
    from sklearn.metrics import f1_score
    t, p = _arrays(targets, predictions)
    return {"f1_macro": 100.0 * float(f1_score(t, p, average="macro", labels=sorted(set(t.tolist()))))}


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
# A sentence ends at `.`, `!` or `?` (then any closing quotes or brackets) followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
# Words whose final period does not end a sentence: titles and common Latin/English abbreviations.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt gen gov lt col sgt sen rev vs cf al fig vol pp inc ltd corp dept approx "
    "jan feb apr aug sept oct nov dec".split())
_INITIALISM = re.compile(r"^(?:[A-Za-z]\.)+$")   # J.  U.S.  e.g.  p.m.


def _ends_sentence(text: str, end: int) -> bool:
    """Whether the terminator ending at `end` closes a sentence: not after an abbreviation or initial."""
    match = text[:end].rstrip("\"')]")
    if not match.endswith("."):
        return True  # ! or ?
    word = match.split()[-1] if match.split() else ""
    stem = word.rstrip(".").lstrip("\"'([").lower()
    if not stem:
        return True  # a period standing alone (tokenized text: "the mat . the dog")
    return stem not in _ABBREVIATIONS and not _INITIALISM.match(word.lstrip("\"'(["))


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, for ROUGE-Lsum (which rouge-score reads as newline-separated sentences).

    A sentence ends at `.`, `!` or `?` (and closing quotes or brackets) followed by whitespace, unless
    the period closes a known abbreviation (`Mr.`, `e.g.`, `No.`) or an initialism (`J.`, `U.S.`,
    `p.m.`). The rule does not depend on case, so it splits lower-cased text ("the mat. the dog"),
    tokenized text with detached periods ("the mat . the dog", T5's own ROUGE-Lsum split on " . ") and
    cased text alike. The summarization literature uses NLTK's punkt model, whose data is a download;
    this is the offline stand-in. Text that already has newlines keeps them as the boundaries.
    """
    if "\n" in text.strip():
        return [s.strip() for s in text.split("\n") if s.strip()]
    text = text.strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if _ends_sentence(text, m.end())]
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
# Metrics by name (tasks.hf.<name>.metrics) and the scores each reports
# --------------------------------------------------------------------------------------------
METRICS = {"accuracy": accuracy, "f1": f1_with_invalid, "f1_macro": f1_macro,
           "matthews_corrcoef": matthews_corrcoef, "pearson_corrcoef": pearson_corrcoef,
           "spearman_corrcoef": spearman_corrcoef, "rouge": rouge}
METRIC_SCORES = {name: (ROUGE_TYPES if name == "rouge" else (name,)) for name in METRICS}


# --------------------------------------------------------------------------------------------
# Aggregates over GLUE tasks
# --------------------------------------------------------------------------------------------
# The paper's "GLUE score" (METHOD.md): the mean of these eight numbers.
PAPER_GLUE_SCORE = (("sst2", "accuracy"), ("mrpc", "f1"), ("stsb", "spearman_corrcoef"), ("qqp", "f1"),
                    ("mnli_matched", "accuracy"), ("mnli_mismatched", "accuracy"), ("qnli", "accuracy"),
                    ("rte", "accuracy"))


def undefined_scores(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    """`task/metric` of every score that is not a finite number: a correlation of a constant prediction
    (Pearson's and Spearman's are undefined when either side has no variance) or MCC's 0/0."""
    return sorted(f"{task}/{name}" for task, scores in results.items() for name, value in scores.items()
                  if value is None or not np.isfinite(value))


# T5's "Average GLUE Score" (t5 `evaluation/eval_utils.py`, `METRIC_NAMES` and `compute_avg_glue`): the
# mean over these eight groups of the mean of each group's metrics. MNLI matched and mismatched form one
# group; WNLI and AX are not part of it.
T5_GLUE_GROUPS = (
    ("cola", (("cola", "matthews_corrcoef"),)),
    ("sst2", (("sst2", "accuracy"),)),
    ("mrpc", (("mrpc", "f1"), ("mrpc", "accuracy"))),
    ("stsb", (("stsb", "pearson_corrcoef"), ("stsb", "spearman_corrcoef"))),
    ("qqp", (("qqp", "f1"), ("qqp", "accuracy"))),
    ("mnli", (("mnli_matched", "accuracy"), ("mnli_mismatched", "accuracy"))),
    ("qnli", (("qnli", "accuracy"),)),
    ("rte", (("rte", "accuracy"),)))


def glue_average(results: Mapping[str, Mapping[str, float]]) -> float | None:
    """T5's GLUE average (`T5_GLUE_GROUPS`) over the groups present: per group the mean of its metrics
    that are present, then the mean over groups. T5 reports it only when all eight groups are there; here
    a missing group is left out (the results table names the tasks scored), and so is a group with an
    undefined score (`undefined_scores`) rather than turning the average into NaN. WNLI and AX scores
    do not enter it.

    Args:
      results: {GLUE task name (`sst2`, `mnli_matched`, ...): {metric: score in percent}}.

    Returns:
      The average in percent, or None when no group is present.
    """
    undefined = {name.split("/")[0] for name in undefined_scores(results)}
    per_group = []
    for _, members in T5_GLUE_GROUPS:
        values = [results[task][metric] for task, metric in members if metric in results.get(task, {})]
        if values and not any(task in undefined for task, _ in members if task in results):
            per_group.append(float(np.mean(values)))
    return float(np.mean(per_group)) if per_group else None


def paper_glue_score(results: Mapping[str, Mapping[str, float]]) -> tuple[float | None, list[str]]:
    """(mean of the paper's eight numbers that are present and defined, the ones missing or undefined)."""
    present, missing = [], []
    for task, metric in PAPER_GLUE_SCORE:
        value = results.get(task, {}).get(metric)
        if value is not None and np.isfinite(value):
            present.append(value)
        else:
            missing.append(f"{task}/{metric}")
    return (float(np.mean(present)) if present else None), missing
