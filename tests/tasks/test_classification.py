"""Local text classification Tasks: format, labels, metrics, and the label-length check."""

import numpy as np
import pytest
import seqio
from sklearn.metrics import f1_score

from miniend_jax.errors import ConfigError
from miniend_jax.evaluation import metrics
from tasks import classification
from tests.conftest import SPIECE


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "topics"
    folder.mkdir()
    (folder / "train.tsv").write_text("the cat sat\tanimals\nstocks fell\tmarkets\nthe dog ran\tanimals\n")
    (folder / "dev.tsv").write_text("bonds rose\tmarkets\n")
    return str(folder)


def test_task_format_labels_and_metrics(directory):
    name = classification.register(directory, str(SPIECE))
    assert name == "cls_topics"
    assert classification.labels_of(directory) == ("animals", "markets")
    task = seqio.get_mixture_or_task(name)
    example = next(iter(task.get_dataset({"inputs": 16, "targets": 4}, split="validation", shuffle=False)))
    assert example["inputs_pretokenized"].numpy().decode() == "topics text: bonds rose"
    assert example["targets_pretokenized"].numpy().decode() == "markets"
    assert task.postprocess_fn("markets") == 1 and task.postprocess_fn(b"animals") == 0
    assert task.postprocess_fn("plants") == -1
    targets, predictions = np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, -1, 1])
    assert metrics.f1_macro(targets, predictions)["f1_macro"] == pytest.approx(
        100 * f1_score(targets, predictions, average="macro", labels=[0, 1]))


def test_label_that_does_not_fit_is_refused(directory):
    with pytest.raises(ConfigError, match=r"tasks.targets_length=1 truncates the cls_topics label"):
        classification.check_labels_fit(classification.labels_of(directory), str(SPIECE), 1, 100, "cls_topics")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"has no dev.tsv for split 'validation'"):
        classification.read_split(str(tmp_path), "validation")


def test_a_dev_label_absent_from_training_is_a_class_not_an_invalid_prediction(tmp_path):
    """Targets and invalid predictions both postprocess to -1 when a dev label is not among the labels, so an
    invalid prediction would score as correct; the labels are the union of the splits."""
    folder = tmp_path / "news"
    folder.mkdir()
    (folder / "train.tsv").write_text("stocks fell\tmarkets\nthe cat sat\tanimals\n")
    (folder / "dev.tsv").write_text("goal scored\tsports\n")
    assert classification.labels_of(str(folder)) == ("animals", "markets", "sports")
    task = seqio.get_mixture_or_task(classification.register(str(folder), str(SPIECE)))
    assert task.postprocess_fn("sports", is_target=True) == 2 and task.postprocess_fn("weather") == -1
