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


def _dev_with_damaged_line(tmp_path, damaged: str):
    """A Task folder whose dev.tsv has 30 lines, line 17 `damaged`."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    (folder / "train.tsv").write_text("good film\tpos\nbad film\tneg\n")
    lines = [f"review number {n}\t{'pos' if n % 2 else 'neg'}" for n in range(1, 31)]
    lines[16] = damaged
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n")
    return str(folder), lines


@pytest.mark.parametrize("damaged,problem", [
    ("review number 17 without its label", "has no tab"),
    ("review number\t17\tpos", "has 2 tabs"),          # the old reader took "17" as the label
    ("review number 17\t", "has an empty label"),
])
def test_a_damaged_dev_line_is_named_or_skipped_and_counted(tmp_path, capsys, damaged, problem):
    """A dev line that is no `text<TAB>label` stops the run naming file and line (on_bad_input='error'),
    or is left out with the count printed (29 of 30 scored, said so)."""
    directory, lines = _dev_with_damaged_line(tmp_path, damaged)
    with pytest.raises(ConfigError, match=rf"dev.tsv line 17: {problem}; write each line as text<TAB>label"):
        classification.read_split(directory, "validation", on_bad_input="error")
    rows = classification.read_split(directory, "validation", on_bad_input="skip")
    assert rows == [tuple(line.split("\t")) for n, line in enumerate(lines) if n != 16]
    assert f"cls_reviews validation: skipped 1 of 30 rows of {directory}/dev.tsv (line 17: {problem})" in \
        capsys.readouterr().out


def test_invalid_utf8_is_named_not_a_traceback(tmp_path):
    folder = tmp_path / "bytes"
    folder.mkdir()
    (folder / "train.tsv").write_bytes(b"good\tpos\nbad \xe9 film\tneg\n")
    with pytest.raises(ConfigError, match=r"train.tsv line 2: is not valid UTF-8 \(byte 5\)"):
        classification.read_split(str(folder), "train", on_bad_input="error")


def test_the_config_field_reaches_the_readers_and_is_validated(tmp_path):
    """data.on_bad_input='error' stops registration at the damaged line; an unknown value is refused by
    validate_config in the downstream modes."""
    from miniend_jax import inputs
    from miniend_jax.config_checks import validate_config
    from tests.conftest import config_with
    directory, _ = _dev_with_damaged_line(tmp_path, "no tab here")
    config = config_with("tiny_finetune", **{"tasks.classification_dirs": directory, "data.on_bad_input": "error"})
    with pytest.raises(ConfigError, match=r"dev.tsv line 17: has no tab"):
        inputs.register_tasks(config)
    for mode in ("finetune", "evaluate"):
        with pytest.raises(ConfigError, match=r"data.on_bad_input='ignore': use 'skip'"):
            validate_config(config_with("tiny_finetune", **{"mode": mode, "data.on_bad_input": "ignore"}))
