"""GLUE benchmark submission files from `mode=infer` predictions of the test splits: file names, rows and
values follow T5's `prepare_glue_submission.py` (its file names and label rules applied to T5's own
postprocessing of the same predictions; AX written like MNLI, STS-B clipped to [0, 5]), and bad input
stops with one line naming the file, the line and the fix, before anything is written."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from miniend_jax.errors import ConfigError
from miniend_jax.glue_submission import write_submission
from tests.conftest import ROOT
from tests.tasks.test_glue import TEST_SPLITS, write_test_files

LABELS = {"cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
          "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"),
          "qnli": ("entailment", "not_entailment"), "rte": ("entailment", "not_entailment"),
          "wnli": ("not_entailment", "entailment")}
for _name in ("mnli_matched", "mnli_mismatched", "ax"):
    LABELS[_name] = ("entailment", "neutral", "contradiction")


def _predictions(counts, seed=0) -> list[dict]:
    """infer's lines for every test set, in shuffled order: label texts drawn at random, STS-B scores
    around and outside [0, 5]; MNLI-mm as glue_mnli's split test_mismatched."""
    rng = np.random.default_rng(seed)
    lines = []
    for config, (task, split) in TEST_SPLITS.items():
        if config == "mnli_mismatched":
            task, split = "mnli", "test_mismatched"
        for idx in range(counts[config]):
            text = (f"{rng.uniform(-0.6, 5.6):.1f}" if config == "stsb"
                    else LABELS[config][rng.integers(len(LABELS[config]))])
            lines.append({"index": len(lines), "task": f"glue_{task}", "split": split, "idx": idx,
                          "input": "...", "target": "<unk>", "prediction": text, "score": -0.1})
    return [lines[i] for i in rng.permutation(len(lines))]


def _write(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def _t5_rows(lines, config) -> list[list]:
    """T5's submission rows for `config`: its postprocess function of the task, then its script's rule
    (label name for the tasks of USES_TEXT, else the class id; AX, absent from T5's script, like MNLI)."""
    import tensorflow_datasets as tfds
    from t5.data import glue_utils
    from t5.scripts import prepare_glue_submission as t5_script
    builder_config = tfds.text.glue.Glue.builder_configs[config]
    postprocess = glue_utils.get_glue_postprocess_fn(builder_config)
    task, split = TEST_SPLITS[config]
    if config == "mnli_mismatched":
        task, split = "mnli", "test_mismatched"
    rows = sorted((line["idx"], line["prediction"]) for line in lines
                  if (line["task"], line["split"]) == (f"glue_{task}", split))
    out = []
    for idx, text in rows:
        value = postprocess(text)
        if config in t5_script.USES_TEXT or config == "ax":
            value = builder_config.label_classes[value]
        elif config == "stsb":
            value = float(np.clip(value, 0.0, 5.0))
        out.append([idx, value])
    return out


def _read(path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_submission_files_follow_t5s_rules(tmp_path):
    from t5.scripts import prepare_glue_submission as t5_script
    counts = write_test_files(tmp_path / "glue")
    lines = _predictions(counts)
    half = len(lines) // 2  # two files, as from two infer runs; each test set in one of them
    first = [line for line in lines if line["task"] in {l["task"] for l in lines[:half]}]
    second = [line for line in lines if line not in first]
    written = write_submission([_write(tmp_path / "a.jsonl", first), _write(tmp_path / "b.jsonl", second)],
                               str(tmp_path / "out"), glue_dir=str(tmp_path / "glue"))
    names = {config: {**t5_script.FILE_NAME_MAP, "ax": "AX"}[config] + ".tsv" for config in TEST_SPLITS}
    assert written == {names[c]: counts[c] for c in TEST_SPLITS}
    assert sorted(os.listdir(tmp_path / "out")) == sorted(["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv",
                                                          "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv", "RTE.tsv",
                                                          "WNLI.tsv", "AX.tsv"])
    for config in TEST_SPLITS:
        rows = _read(tmp_path / "out" / names[config])
        assert rows[0] == ["index", "prediction"], config
        expected = _t5_rows(lines, config)
        assert [int(r[0]) for r in rows[1:]] == [idx for idx, _ in expected] == list(range(counts[config]))
        if config == "stsb":
            np.testing.assert_array_equal([float(r[1]) for r in rows[1:]], [v for _, v in expected])
            assert {float(r[1]) for r in rows[1:]} <= set(np.round(np.arange(0, 5.01, 0.1), 1))
        else:
            assert [r[1] for r in rows[1:]] == [str(v) for _, v in expected], config
    assert {r[1] for r in _read(tmp_path / "out" / "RTE.tsv")[1:]} <= {"entailment", "not_entailment"}
    assert {r[1] for r in _read(tmp_path / "out" / "CoLA.tsv")[1:]} <= {"0", "1"}


def test_the_command_line_writes_the_files_and_stops_on_bad_input(tmp_path):
    counts = write_test_files(tmp_path / "glue")
    lines = _predictions(counts)
    rte = [line for line in lines if line["task"] == "glue_rte"]
    command = [sys.executable, "-m", "miniend_jax.glue_submission", f"--glue_dir={tmp_path / 'glue'}"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    _write(tmp_path / "rte.jsonl", rte)
    done = subprocess.run(command + [f"--predictions={tmp_path / 'rte.jsonl'}", f"--out={tmp_path / 'out'}"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert os.listdir(tmp_path / "out") == ["RTE.tsv"]
    assert f"RTE.tsv {counts['rte']} rows" in done.stdout and "the server also wants CoLA.tsv" in done.stdout
    again = subprocess.run(command + [f"--predictions={tmp_path / 'rte.jsonl'}", f"--out={tmp_path / 'out'}"],
                           capture_output=True, text=True, cwd=ROOT, env=env)
    assert again.returncode == 2
    error = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "RTE.tsv already exist" in error[0]


def _bad(kind, counts):
    lines = sorted((line for line in _predictions(counts) if line["task"] == "glue_rte"), key=lambda l: l["idx"])
    if kind == "validation":
        lines[0]["split"] = "validation"
    elif kind == "short":
        lines = lines[:-1]
    elif kind == "twice":
        lines.append(dict(lines[0]))
    elif kind == "invalid":
        lines[1]["prediction"] = "maybe"
    elif kind == "file":
        lines = [{"index": 0, "input": "rte sentence1: a", "prediction": "entailment", "score": -0.1}]
    return lines


@pytest.mark.parametrize("kind,message", [
    ("validation", r"p.jsonl line 1: glue_rte split 'validation' is no GLUE test set .*--config.tasks.eval_split=test"),
    ("short", r"3 RTE predictions, but the test file in .* has 4 rows; decode the whole split"),
    ("twice", r"RTE idx 0 is predicted twice"),
    ("invalid", r"p.jsonl line 2: 'maybe' is no RTE answer \(1 of 4 .* --fill_invalid"),
    ("file", r"p.jsonl line 1 is no prediction of a GLUE Task \(task=None\)"),
])
def test_bad_predictions_are_named_before_anything_is_written(tmp_path, kind, message):
    counts = write_test_files(tmp_path / "glue")
    path = _write(tmp_path / "p.jsonl", _bad(kind, counts))
    with pytest.raises(ConfigError, match=message):
        write_submission([path], str(tmp_path / "out"), glue_dir=str(tmp_path / "glue"))
    assert not os.path.exists(tmp_path / "out")


def test_a_glue_dir_without_the_test_file_is_named(tmp_path):
    counts = write_test_files(tmp_path / "glue")
    path = _write(tmp_path / "p.jsonl", [l for l in _predictions(counts) if l["task"] == "glue_ax"])
    os.rename(tmp_path / "glue" / "diagnostic", tmp_path / "glue" / "AX")  # AX/diagnostic.tsv: read as well
    write_submission([path], str(tmp_path / "out"), glue_dir=str(tmp_path / "glue"))
    with pytest.raises(ConfigError, match=r"--glue_dir='/nonexistent': GLUE ax split 'test': no diagnostic.tsv .*"
                                          r"Set --glue_dir to the GLUE folder .* or to '' to skip"):
        write_submission([path], str(tmp_path / "out2"), glue_dir="/nonexistent")
    assert write_submission([path], str(tmp_path / "out3"), glue_dir=None) == {"AX.tsv": counts["ax"]}


def test_fill_invalid_writes_the_most_frequent_label(tmp_path):
    counts = write_test_files(tmp_path / "glue")
    lines = [line for line in _predictions(counts) if line["task"] in ("glue_mnli_matched", "glue_stsb")]
    mnli = sorted((l for l in lines if l["task"] == "glue_mnli_matched"), key=lambda l: l["idx"])
    # "Contradiction" is no label (T5's postprocessing is case-sensitive): filled with "neutral", the most
    # frequent, which a lower-casing bug could not produce.
    for line, text in zip(mnli, ["neutral", "neutral", "contradiction", "Contradiction", "entailment"]):
        line["prediction"] = text
    stsb = sorted((l for l in lines if l["task"] == "glue_stsb"), key=lambda l: l["idx"])
    assert counts["mnli_matched"] == 5 and counts["stsb"] == 3
    for line, text in zip(stsb, ["4.0", "nan", "1.0"], strict=True):
        line["prediction"] = text
    write_submission([_write(tmp_path / "p.jsonl", lines)], str(tmp_path / "out"), glue_dir=str(tmp_path / "glue"),
                     fill_invalid=True)
    assert [r[1] for r in _read(tmp_path / "out" / "MNLI-m.tsv")[1:]] == [
        "neutral", "neutral", "contradiction", "neutral", "entailment"]
    assert [float(r[1]) for r in _read(tmp_path / "out" / "STS-B.tsv")[1:]] == [4.0, 2.5, 1.0]  # NaN: median of 4, 1


@pytest.mark.parametrize("line,message", [
    (b'{"task": "glue_rte", "split": "test", "idx": 0, "prediction": "entailment"}\n\xff\xfe\n',
     r"p.jsonl line 2 is not valid UTF-8"),
    (b'[1, 2]\n', r"p.jsonl line 1 is not a JSON object"),
    (b'{"task": "glue_rte", "split": "test", "idx": true, "prediction": "entailment"}\n',
     r"p.jsonl line 1 has no integer `idx`"),
])
def test_a_damaged_predictions_line_is_named(tmp_path, line, message):
    """A line that is not UTF-8, not an object, or holds JSON `true` as idx (a raw UnicodeDecodeError or
    AttributeError, or read as idx 1, before)."""
    (tmp_path / "p.jsonl").write_bytes(line)
    with pytest.raises(ConfigError, match=message):
        write_submission([str(tmp_path / "p.jsonl")], str(tmp_path / "out"), glue_dir=None)


def test_a_damaged_row_of_the_test_file_stops_the_submission(tmp_path):
    """The server scores every row: a test row the reader would skip is named, not left out."""
    counts = write_test_files(tmp_path / "glue")
    rte = tmp_path / "glue" / "RTE" / "test.tsv"
    rte.write_text(rte.read_text().rstrip("\n") + "\n4\tonly one field\n")
    lines = [l for l in _predictions(counts) if l["task"] == "glue_rte"]
    with pytest.raises(ConfigError, match=r"RTE/test.tsv line 6: has 2 tab-separated fields, the header 3"):
        write_submission([_write(tmp_path / "p.jsonl", lines)], str(tmp_path / "out"), glue_dir=str(tmp_path / "glue"))
