"""Pretraining text from HF datasets built offline from ../shared/data: Wikipedia lines saved with
`save_to_disk`, SST-2's TSV as parquet. The text is exported once per source and read like local files
(validation held out, exact resume); bad input names the column or split and the fix."""

import gzip
import json
import os

import numpy as np
import pytest

from miniend_jax.errors import ConfigError
from miniend_jax.modes import run
from miniend_jax.plot import read_metrics
from tasks import hf_text
from tests.conftest import ROOT, SHARED_DATA, config_with


@pytest.fixture(scope="module")
def wiki_dir(tmp_path_factory):
    """A DatasetDict (train, validation) of Wikipedia paragraphs with an id column, saved to disk."""
    import datasets
    with gzip.open(SHARED_DATA / "enwiki_2015_extract/AA/wiki_00.gz", "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f if len(line) > 40 and not line.startswith("<")][:1500]
    directory = str(tmp_path_factory.mktemp("hf") / "wiki")
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"id": list(range(1300)), "text": lines[:1300]}),
        "validation": datasets.Dataset.from_dict({"id": list(range(200)), "text": lines[1300:]}),
    }).save_to_disk(directory)
    return directory, lines


@pytest.fixture(scope="module")
def sst2_parquet(tmp_path_factory):
    import csv

    import pandas
    with open(SHARED_DATA / "glue/SST-2/train.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:3000]
    path = str(tmp_path_factory.mktemp("hf") / "sst2.parquet")
    pandas.DataFrame({"sentence": [r["sentence"] for r in rows], "label": [int(r["label"]) for r in rows]}).to_parquet(path)
    return path, [r["sentence"] for r in rows]


def _exported(files):
    return [json.loads(line)["text"] for f in files for line in open(f, encoding="utf-8")]


def test_export_writes_every_document_once_and_is_reused(wiki_dir, sst2_parquet, tmp_path):
    directory, lines = wiki_dir
    files = hf_text.export_text(directory, "train", "text", str(tmp_path / "a"), 4)
    assert len(files) == 4 and sorted(_exported(files)) == sorted(lines[:1300])
    assert _exported(files[:1])[:2] == [lines[0], lines[4]]  # dealt round-robin
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    assert hf_text.export_text(directory, "train", "text", str(tmp_path / "a"), 4) == files
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes
    # Another source into the same directory (a resumed run whose dataset changed) is refused: the
    # checkpointed input position refers to the exported text.
    with pytest.raises(ConfigError, match=r"holds the text of another dataset"):
        hf_text.export_text(directory, "validation", "text", str(tmp_path / "a"), 4)
    # A new source that is itself wrong is named for what is wrong with it, not only for being another.
    with pytest.raises(ConfigError, match=r"data.text_field='body': .* has no column 'body'"):
        hf_text.export_text(directory, "train", "body", str(tmp_path / "a"), 4)
    path, sentences = sst2_parquet
    files = hf_text.export_text(path, "train", "sentence", str(tmp_path / "b"), 3)
    assert sorted(_exported(files)) == sorted(s for s in sentences if s.strip())


@pytest.mark.parametrize("split,field,message", [
    ("test", "text", r"data.hf_split='test': the dataset at .* has the splits train, validation"),
    ("train", "body", r"data.text_field='body': the dataset at .* has no column 'body' \(its columns: id, text\)"),
    ("train", "id", r"column 'id' of the dataset at .* holds int64, not text"),
])
def test_bad_dataset_input_names_the_problem(wiki_dir, split, field, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        hf_text.export_text(wiki_dir[0], split, field, str(tmp_path / "out"), 4)
    assert not os.path.exists(tmp_path / "out" / "source.json")


def test_empty_split_and_missing_files(tmp_path):
    import pandas
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"split 'train' of the dataset at .* is empty"):
        hf_text.export_text(str(tmp_path / "empty.jsonl"), "train", "text", str(tmp_path / "out"), 2)
    pandas.DataFrame({"text": pandas.Series([], dtype=str)}).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ConfigError, match=r"split 'train' of the dataset at .*empty.parquet is empty \(its files hold no rows\)"):
        hf_text.export_text(str(tmp_path / "empty.parquet"), "train", "text", str(tmp_path / "out"), 2)
    with pytest.raises(ConfigError, match=r"data.hf_path='/nonexistent/\*.parquet' is neither"):
        hf_text.export_text("/nonexistent/*.parquet", "train", "text", str(tmp_path / "out"), 2)


def test_a_row_without_text_is_named_or_skipped_and_counted(tmp_path, capsys):
    """A null in the text column was dropped without a word; now it is counted (skip) or stops the export
    naming the row (error), and nothing of a stopped export is left behind."""
    import pandas
    texts = ["first document", None, "third document", "fourth document"]
    pandas.DataFrame({"text": texts}).to_parquet(tmp_path / "corpus.parquet")
    path = str(tmp_path / "corpus.parquet")
    with pytest.raises(ConfigError, match=r"row 2 of split 'train' of .*corpus.parquet: has no text in column "
                                          r"'text'; give every row text .*data.on_bad_input='skip'"):
        hf_text.export_text(path, "train", "text", str(tmp_path / "stopped"), 2, on_bad_input="error")
    assert not os.listdir(tmp_path / "stopped")
    files = hf_text.export_text(path, "train", "text", str(tmp_path / "out"), 2, on_bad_input="skip")
    assert sorted(_exported(files)) == sorted(t for t in texts if t)
    assert f"data.hf_path split 'train': skipped 1 of 4 rows of {path} (row 2 of split 'train'" in capsys.readouterr().out


def _config(path, field, **changes):
    return config_with("tiny", **{"data.source": "hf", "data.hf_path": path, "data.text_field": field,
                                  "data.hf_shards": 4, "data.validation_files": 1, "train.steps": 6,
                                  "train.checkpoint_every": 3, "train.async_checkpoints": False,
                                  "optim.decay": "constant", **changes})  # the same rates for 3 or 6 steps


def _losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(str(workdir)) if "loss" in r}


def test_distillation_from_a_saved_dataset_resumes_exactly(wiki_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run(_config(wiki_dir[0], "text"), str(tmp_path / "whole"))
    run(_config(wiki_dir[0], "text", **{"train.steps": 3}), str(tmp_path / "resumed"))
    run(_config(wiki_dir[0], "text"), str(tmp_path / "resumed"))
    whole, resumed = _losses(tmp_path / "whole"), _losses(tmp_path / "resumed")
    assert sorted(whole) == sorted(resumed) == list(range(1, 7))
    assert [resumed[s] for s in range(4, 7)] == [whole[s] for s in range(4, 7)]  # same batches after resume
    assert np.isfinite([r["eval/ground_truth"] for r in read_metrics(str(tmp_path / "whole"))
                        if "eval/ground_truth" in r]).all()


def test_distillation_from_parquet_files(sst2_parquet, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run(_config(sst2_parquet[0], "sentence", **{"train.steps": 2, "train.checkpoint_every": 2}), str(tmp_path))
    assert sorted(_losses(tmp_path)) == [1, 2]
    with pytest.raises(ConfigError, match=r"column 'label' .* holds int64, not text"):
        run(_config(sst2_parquet[0], "label", **{"train.steps": 2}), str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad" / "checkpoints")
