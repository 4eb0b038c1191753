"""`inputs.py` asks each family of downstream Tasks (`TASK_FAMILIES`) about its Tasks: the scores and main
score (which choose the best checkpoint) and the train files (which a resumed finetune records)."""

import sys
import types

import pytest

from miniend_jax import inputs
from miniend_jax.errors import ConfigError
from tests.conftest import SHARED_DATA, config_with


@pytest.mark.parametrize("task, main", [("glue_cola", "matthews_corrcoef"), ("glue_stsb", "pearson_corrcoef"),
                                        ("glue_sst2", "accuracy"), ("summ_xsum", "rougeL"),
                                        ("cls_reviews", "accuracy")])
def test_the_main_score_is_the_tasks_familys(task, main):
    assert inputs.best_metric(config_with("tiny_finetune", **{"tasks.eval": task})) == (task, main)


def test_a_score_the_task_does_not_report_is_refused_naming_those_it_does():
    config = config_with("tiny_finetune", **{"tasks.eval": "summ_xsum", "tasks.best_metric": "summ_xsum/accuracy"})
    with pytest.raises(ConfigError, match="summ_xsum reports rouge1, rouge2, rougeL, rougeLsum"):
        inputs.check_best_metric(config)


def test_train_files_come_from_each_tasks_family(tmp_path):
    (tmp_path / "reviews").mkdir()
    (tmp_path / "reviews" / "train.tsv").write_text("good film\tpositive\n")
    config = config_with("tiny_finetune", **{"tasks.train": "glue_sst2", "tasks.glue_dir": str(SHARED_DATA / "glue"),
                                             "tasks.classification_dirs": str(tmp_path / "reviews")})
    assert inputs.train_files(config) == [str(SHARED_DATA / "glue" / "SST-2" / "train.tsv")]
    config = config_with("tiny_finetune", **{"tasks.train": "cls_reviews",
                                             "tasks.classification_dirs": str(tmp_path / "reviews")})
    assert inputs.train_files(config) == [str(tmp_path / "reviews" / "train.tsv")]
    config = config_with("tiny_finetune", **{"tasks.train": "summ_samsum", "tasks.summarization_dir": str(SHARED_DATA)})
    assert inputs.train_files(config) == [str(SHARED_DATA / "samsum" / "samsum_validation_and_test.csv")]
    config = config_with("tiny_finetune", **{"tasks.train": "summ_xsum", "tasks.summarization_dir": str(SHARED_DATA)})
    assert inputs.train_files(config) == []  # XSum has no local train split (its TFDS one is not a file here)


def test_a_new_family_is_a_module_with_two_answers(monkeypatch):
    family = types.ModuleType("tasks.toy_family")
    family.scores = lambda name, config: (["exact_match", "f1"], "f1") if name.startswith("toy_") else None
    family.train_files = lambda name, config: ["/data/toy/train.jsonl"] if name.startswith("toy_") else None
    monkeypatch.setitem(sys.modules, "tasks.toy_family", family)
    monkeypatch.setattr(inputs, "TASK_FAMILIES", (*inputs.TASK_FAMILIES, "tasks.toy_family"))
    config = config_with("tiny_finetune", **{"tasks.eval": "toy_qa", "tasks.train": "toy_qa"})
    assert inputs.best_metric(config) == ("toy_qa", "f1")
    assert inputs.train_files(config) == ["/data/toy/train.jsonl"]
    with pytest.raises(ConfigError, match="toy_qa reports exact_match, f1"):
        inputs.check_best_metric(config_with("tiny_finetune", **{"tasks.eval": "toy_qa", "tasks.best_metric": "toy_qa/bleu"}))
