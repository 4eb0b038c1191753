"""Summarization Tasks: T5's `summarize:` format, local splits of ../shared/data, ROUGE as the metric."""

import json

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


def test_a_bad_json_line_is_named_or_skipped_and_counted(tmp_path, capsys):
    """One broken line of a summarization jsonl: the file and line and the fix, not a JSONDecodeError."""
    (tmp_path / "xsum").mkdir()
    records = [{"article": f"document {n}", "reference": f"summary {n}"} for n in range(4)]
    lines = [json.dumps(r) for r in records]
    lines[2] = lines[2][:-1]  # line 3 loses its closing brace
    (tmp_path / "xsum" / "frank_xsum_test_subset.jsonl").write_text("\n".join(lines) + "\n")
    task = summarization.TASKS["xsum"]
    with pytest.raises(ConfigError, match=r"frank_xsum_test_subset.jsonl line 3: is not JSON \(.*\); repair or "
                                          r"delete that jsonl line .*'article' and 'reference'"):
        summarization.read_split(str(tmp_path), task, "test", on_bad_input="error")
    rows = summarization.read_split(str(tmp_path), task, "test")
    assert rows == [{"document": r["article"], "summary": r["reference"]} for n, r in enumerate(records) if n != 2]
    assert "xsum test: skipped 1 of 4 rows" in capsys.readouterr().out


def test_a_short_csv_record_is_named_by_its_first_line(tmp_path, capsys):
    """csv records may span lines (quoted newlines, kept as written): a record without its summary is
    named by the line it starts on."""
    (tmp_path / "samsum").mkdir()
    (tmp_path / "samsum" / "samsum_validation_and_test.csv").write_bytes(
        b'id,dialogue,summary\n1,"A: hi\r\nB: yo",greeting\n2,"A: bye\r\nB: ciao"\n3,A: ok,agreed\n')
    task = summarization.TASKS["samsum"]
    with pytest.raises(ConfigError, match=r"samsum_validation_and_test.csv line 4: has 2 comma-separated fields, "
                                          r"the header 3"):
        summarization.read_split(str(tmp_path), task, "train", on_bad_input="error")
    assert summarization.read_split(str(tmp_path), task, "train") == [
        {"document": "A: hi\r\nB: yo", "summary": "greeting"}, {"document": "A: ok", "summary": "agreed"}]
    assert "samsum train: skipped 1 of 3 rows" in capsys.readouterr().out
