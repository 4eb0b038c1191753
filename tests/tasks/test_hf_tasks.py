"""Downstream Tasks from HF datasets built offline from ../shared/data (SST-2 as parquet, RTE with a
ClassLabel saved to disk, STS-B as jsonl, SAMSum as a single saved Dataset): the examples are token for
token those of the project's GLUE and summarization Tasks on the same rows (whose format is tested against
the `t5` package in test_t5_reference.py), predictions are scored by the named metrics, and bad input names
the field and the fix."""

import csv
import json

import pytest
import seqio

from miniend_jax.errors import ConfigError
from miniend_jax.evaluation import metrics
from tasks import glue, hf_tasks, summarization
from tests.conftest import SHARED_DATA, SPIECE

ROWS = 250  # validation rows compared


def _tsv(path, limit):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]


def write_sst2_parquet(directory, train_rows=300, validation_rows=ROWS) -> str:
    """SST-2's train and dev TSV (first rows) as `<directory>/{train,validation}.parquet`; returns the
    pattern."""
    import pandas
    for split, name, limit in (("train", "train", train_rows), ("validation", "dev", validation_rows)):
        rows = _tsv(SHARED_DATA / f"glue/SST-2/{name}.tsv", limit)
        pandas.DataFrame({"sentence": [r["sentence"] for r in rows], "label": [int(r["label"]) for r in rows]}
                         ).to_parquet(directory / f"{split}.parquet")
    return str(directory / "{split}.parquet")


SST2 = dict(inputs="sst2 sentence: {sentence}", targets="{label}", label_names="negative,positive",
            metrics="accuracy,f1_macro")


def _examples(name, split="validation", n=ROWS):
    dataset = seqio.get_mixture_or_task(name).get_dataset({"inputs": 512, "targets": 512}, split=split,
                                                         shuffle=False)
    return [{k: (v.numpy().tolist() if k in ("inputs", "targets") else v.numpy().decode())
             for k, v in ex.items() if k in ("inputs", "targets", "inputs_pretokenized", "targets_pretokenized")}
            for ex in dataset.take(n)]


@pytest.fixture(scope="module")
def glue_tasks():
    glue.register(str(SPIECE), data_dir=str(SHARED_DATA / "glue"))


def test_sst2_from_parquet_equals_the_glue_task(tmp_path, glue_tasks):
    name = hf_tasks.register("sst2", dict(SST2, path=write_sst2_parquet(tmp_path)), str(SPIECE))
    assert name == "hf_sst2" and hf_tasks.labels(name) == ("negative", "positive")
    task = seqio.get_mixture_or_task(name)
    assert task.splits == ("train", "validation") and task.num_input_examples("train") == 300
    assert _examples(name) == _examples("glue_sst2")
    assert [task.postprocess_fn(x) for x in (b"positive", "negative", "neutral")] == [1, 0, -1]
    targets, predictions = [0, 1, 1, 0, 1, 1], [0, 1, -1, 0, 0, 1]
    scores = {k: v for fn in task.metric_fns for k, v in fn(targets, predictions).items()}
    assert scores == pytest.approx({**metrics.accuracy(targets, predictions), **metrics.f1_macro(targets, predictions)})


def test_rte_saved_with_a_classlabel_equals_the_glue_task(tmp_path, glue_tasks):
    """Label names come from the ClassLabel feature; two columns in one template."""
    import datasets
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "not_entailment"])})
    splits = {}
    for split, name in (("train", "train"), ("validation", "dev")):
        rows = _tsv(SHARED_DATA / f"glue/RTE/{name}.tsv", ROWS)
        splits[split] = datasets.Dataset.from_dict(
            {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows],
             "label": [r["label"] for r in rows]}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "rte"))
    name = hf_tasks.register("rte", dict(path=str(tmp_path / "rte"), inputs="rte sentence1: {sentence1} "
                                         "sentence2: {sentence2}", targets="{label}", metrics="accuracy"), str(SPIECE))
    assert hf_tasks.labels(name) == ("entailment", "not_entailment")
    assert _examples(name) == _examples("glue_rte")


def test_stsb_from_jsonl_is_a_regression_task(tmp_path, glue_tasks):
    """A float column with correlation metrics: targets written by the template's format spec (scores
    rounded to T5's 0.2 steps beforehand), predictions read back as floats."""
    for split, name in (("train", "train"), ("validation", "dev")):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for r in _tsv(SHARED_DATA / f"glue/STS-B/{name}.tsv", ROWS):
                f.write(json.dumps({"s1": r["sentence1"], "s2": r["sentence2"],
                                    "score": round(float(r["score"]) * 5) / 5}) + "\n")
    name = hf_tasks.register("stsb", dict(path=str(tmp_path / "{split}.jsonl"), inputs="stsb sentence1: {s1} "
                                          "sentence2: {s2}", targets="{score:.1f}",
                                          metrics="pearson_corrcoef,spearman_corrcoef"), str(SPIECE))
    assert _examples(name) == _examples("glue_stsb")
    task = seqio.get_mixture_or_task(name)
    assert [task.postprocess_fn(x) for x in (b"3.4", "five")] == [3.4, -1.0]
    assert hf_tasks.score_names(dict(metrics="pearson_corrcoef,spearman_corrcoef")) == [
        "pearson_corrcoef", "spearman_corrcoef"]


def test_samsum_as_one_saved_dataset_is_a_text_task(tmp_path):
    """A single saved Dataset is split `train`; `splits` maps seqio's validation to it; rouge scores text."""
    import datasets
    with open(SHARED_DATA / "samsum/samsum_validation_and_test.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[718:818]  # the local summ_samsum validation rows
    datasets.Dataset.from_dict({"dialogue": [r["dialogue"] for r in rows], "summary": [r["summary"] for r in rows]}
                               ).save_to_disk(str(tmp_path / "samsum"))
    name = hf_tasks.register("samsum", dict(path=str(tmp_path / "samsum"), splits=dict(validation="train"),
                                            inputs="summarize: {dialogue}", targets="{summary}", metrics="rouge"),
                             str(SPIECE))
    summarization.register(str(SPIECE), data_dir=str(SHARED_DATA))
    assert seqio.get_mixture_or_task(name).splits == ("validation",)
    assert _examples(name, n=100) == _examples("summ_samsum", n=100)
    task = seqio.get_mixture_or_task(name)
    assert task.postprocess_fn(b"Amanda baked.") == "Amanda baked."
    assert hf_tasks.score_names(dict(metrics="rouge")) == list(metrics.ROUGE_TYPES)


def test_labels_without_names_are_the_values_of_every_split(tmp_path):
    """String labels (RTE's TSV as parquet): the label set is the sorted values of all splits, so a
    validation-only label is still a class."""
    import pandas
    pandas.DataFrame({"text": ["a", "b"], "label": ["yes", "no"]}).to_parquet(tmp_path / "train.parquet")
    pandas.DataFrame({"text": ["c"], "label": ["maybe"]}).to_parquet(tmp_path / "validation.parquet")
    name = hf_tasks.register("yn", dict(path=str(tmp_path / "{split}.parquet"), inputs="q: {text}",
                                        targets="{label}", metrics="accuracy"), str(SPIECE))
    assert hf_tasks.labels(name) == ("maybe", "no", "yes")
    assert seqio.get_mixture_or_task(name).postprocess_fn(b"no") == 1


def _bad(tmp_path, kind):
    import datasets
    import pandas
    good = dict(SST2, path=write_sst2_parquet(tmp_path, 20, 10))
    if kind == "missing column":
        return dict(good, inputs="sst2 sentence: {text}"), r"tasks.hf.bad.inputs=.*names the column 'text'.*columns: sentence, label"
    if kind == "unknown split":
        return dict(good, splits=dict(train="train", validation="dev")), r"tasks.hf.bad.splits: validation -> 'dev'.*has the splits train, validation"
    if kind == "no dataset":
        return dict(good, path=str(tmp_path / "nowhere")), r"tasks.hf.bad.path=.*neither a save_to_disk directory nor a file pattern"
    if kind == "empty split":
        pandas.DataFrame({"sentence": pandas.Series([], dtype=str), "label": pandas.Series([], dtype=int)}
                         ).to_parquet(tmp_path / "validation.parquet")
        return good, r"split 'validation' of the dataset at .*validation.parquet is empty .*point tasks.hf.bad.path at"
    if kind == "label outside the names":
        return dict(good, label_names="negative"), r"holds the label 1, but there are 1 label names.*tasks.hf.bad.label_names"
    if kind == "list column":
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"tokens": [["a", "b"]], "label": [0]})}
                             ).save_to_disk(str(tmp_path / "lists"))
        return dict(good, path=str(tmp_path / "lists"), inputs="{tokens}"), r"column 'tokens' .* holds list values, which a template cannot write"
    if kind == "correlation over text":
        return dict(good, targets="{sentence}", label_names="", metrics="pearson_corrcoef"), r"correlates numbers, but column 'sentence' .* holds str"
    if kind == "unknown metric":
        return dict(good, metrics="accuracy,bleu"), r"tasks.hf.bad.metrics: unknown metric 'bleu'; use some of accuracy"
    if kind == "classes over two columns":
        return dict(good, targets="{label} {sentence}", label_names=""), r"scores class labels, but tasks.hf.bad.targets=.* is not one column"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing column", "unknown split", "no dataset", "empty split",
                                  "label outside the names", "list column", "correlation over text",
                                  "unknown metric", "classes over two columns"])
def test_bad_input_names_the_field_and_the_fix(tmp_path, kind):
    spec, message = _bad(tmp_path, kind)
    with pytest.raises(ConfigError, match=message):
        hf_tasks.register("bad", spec, str(SPIECE))


def test_bad_settings_stop_config_validation(tmp_path):
    """Wrong types and unknown metrics are refused by validate_config, before anything is registered."""
    from miniend_jax.config_checks import validate_config
    from tests.conftest import config_with
    config = config_with("tiny_finetune")
    config.tasks.hf.sst2 = dict(SST2, path=str(tmp_path / "{split}.parquet"), metrics="acc")
    with pytest.raises(ConfigError, match=r"tasks.hf.sst2.metrics: unknown metric 'acc'"):
        validate_config(config)
    config.tasks.hf.sst2 = dict(SST2, path=str(tmp_path / "{split}.parquet"), splits="train")
    with pytest.raises(ConfigError, match=r"tasks.hf.sst2.splits='train': give a dict"):
        validate_config(config)
    config.tasks.hf.sst2 = dict(SST2, path=str(tmp_path / "{split}.parquet"), input="{sentence}")
    with pytest.raises(ConfigError, match=r"tasks.hf.sst2 has unknown field\(s\) input"):
        validate_config(config)


def _jsonl_pattern(tmp_path, validation_lines):
    (tmp_path / "train.jsonl").write_text(json.dumps({"sentence": "good", "label": 1}) + "\n")
    (tmp_path / "validation.jsonl").write_text("\n".join(validation_lines) + "\n")
    return dict(SST2, path=str(tmp_path / "{split}.jsonl"))


def test_a_line_datasets_cannot_parse_is_named_by_file_and_line(tmp_path):
    spec = _jsonl_pattern(tmp_path, ['{"sentence": "a", "label": 0}', '{"sentence": "b", "label": 1}',
                                     '{"sentence": "c", "label": 1'])
    with pytest.raises(ConfigError, match=r"validation.jsonl line 3: is not JSON .*repair or delete that line"):
        hf_tasks.register("broken", spec, str(SPIECE))


@pytest.mark.parametrize("damaged,problem", [
    ('{"sentence": null, "label": 1}', "has no value in column 'sentence'"),
    ('{"sentence": "an unlabelled row", "label": -1}', r"has no label \(-1 in column 'label'"),  # was `<unk>`
])
def test_a_damaged_row_is_named_or_skipped_and_counted(tmp_path, capsys, damaged, problem):
    lines = ['{"sentence": "a fine film", "label": 1}', damaged, '{"sentence": "a dull one", "label": 0}']
    spec = _jsonl_pattern(tmp_path, lines)
    with pytest.raises(ConfigError, match=rf"validation.jsonl line 2: {problem}.*data.on_bad_input='skip'"):
        hf_tasks.register("damaged", spec, str(SPIECE), on_bad_input="error")
    name = hf_tasks.register("damaged", spec, str(SPIECE), on_bad_input="skip")
    out = capsys.readouterr().out
    assert f"hf_damaged validation: skipped 1 of 3 rows of {spec['path']} ({tmp_path}/validation.jsonl line 2: " in out
    task = seqio.get_mixture_or_task(name)
    examples = list(task.get_dataset({"inputs": 16, "targets": 4}, split="validation", shuffle=False).as_numpy_iterator())
    assert [e["targets_pretokenized"].decode() for e in examples] == ["positive", "negative"]
