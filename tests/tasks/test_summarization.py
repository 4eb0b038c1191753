"""Summarization Tasks: T5's `summarize:` format, local splits of ../shared/data, ROUGE as the metric."""

import pytest
import seqio

from miniend_jax.errors import ConfigError
from tasks import summarization
from tests.conftest import SHARED_DATA, SPIECE


@pytest.fixture(scope="module")
def registered():
    return summarization.register(str(SPIECE), data_dir=str(SHARED_DATA), prefix="summ_test")


@pytest.mark.parametrize("task,split,rows", [
    ("cnn_dailymail", "train", 900), ("cnn_dailymail", "validation", 100), ("cnn_dailymail", "test", 250),
    ("xsum", "test", 251), ("samsum", "train", 718), ("samsum", "validation", 100), ("samsum", "test", 819)])
def test_local_splits(task, split, rows):
    data = summarization.read_split(str(SHARED_DATA), summarization.TASKS[task], split)
    assert len(data) == rows
    assert all(r["document"].strip() and r["summary"].strip() for r in data)


def test_samsum_splits_start_where_the_data_card_says():
    task = summarization.TASKS["samsum"]
    assert summarization.read_split(str(SHARED_DATA), task, "train")[0]["document"].startswith("A: Hi Tom, are you busy")
    assert summarization.read_split(str(SHARED_DATA), task, "test")[0]["document"].startswith(
        "Hannah: Hey, do you have Betty")


def test_t5_format_and_metric(registered):
    assert set(registered) == {"summ_test_cnn_dailymail", "summ_test_xsum", "summ_test_samsum"}
    task = seqio.get_mixture_or_task("summ_test_samsum")
    example = next(iter(task.get_dataset({"inputs": 512, "targets": 64}, split="test", shuffle=False)))
    assert example["inputs_pretokenized"].numpy().decode().startswith("summarize: Hannah: Hey, do you have Betty")
    reference = summarization.read_split(str(SHARED_DATA), summarization.TASKS["samsum"], "test")[0]["summary"]
    assert example["targets_pretokenized"].numpy().decode() == reference
    assert [f.__name__ for f in task.metric_fns] == ["rouge"]


def test_missing_split_is_named():
    with pytest.raises(ConfigError, match="xsum has no local split 'train'"):
        summarization.check_split("summ_xsum", "train", data_dir=str(SHARED_DATA))
    with pytest.raises(ConfigError, match="needs .*validation_first1000.csv"):
        summarization.check_split("summ_cnn_dailymail", "train", data_dir="/nonexistent")
