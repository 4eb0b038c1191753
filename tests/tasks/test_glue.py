"""GLUE Tasks: T5's text-to-text format for each task on a known example, local readers against the
files' row counts, postprocessing, and the mixture."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from miniend_jax.errors import ConfigError
from tasks import glue
from tests.conftest import SHARED_DATA, SPIECE

GLUE_DIR = str(SHARED_DATA / "glue")


@pytest.fixture(scope="module")
def registered():
    return glue.register(str(SPIECE), data_dir=GLUE_DIR, prefix="glue_test")


def _format(task, **features):
    return {k: v.numpy().decode() if v.dtype == tf.string else v.numpy()
            for k, v in glue.t5_format({k: tf.constant(v) for k, v in features.items()}, task=glue.TASKS[task]).items()}


# One example per task in T5's format: benchmark name, `feature: text` in sorted feature order, label name.
KNOWN = [
    ("cola", dict(sentence="The sailors rode the breeze clear of the rocks.", label=1),
     "cola sentence: The sailors rode the breeze clear of the rocks.", "acceptable"),
    ("sst2", dict(sentence="unflinchingly bleak and desperate", label=0),
     "sst2 sentence: unflinchingly bleak and desperate", "negative"),
    ("mrpc", dict(sentence1="He said so .", sentence2="He said it .", label=1),
     "mrpc sentence1: He said so . sentence2: He said it .", "equivalent"),
    ("qqp", dict(question1="How do I cook?", question2="How to cook?", label=1),
     "qqp question1: How do I cook? question2: How to cook?", "duplicate"),
    ("stsb", dict(sentence1="A man is dancing.", sentence2="A man dances.", label=3.12),
     "stsb sentence1: A man is dancing. sentence2: A man dances.", "3.2"),
    ("mnli", dict(premise="The new rights are nice enough", hypothesis="Everyone likes them", label=1),
     "mnli hypothesis: Everyone likes them premise: The new rights are nice enough", "neutral"),
    ("qnli", dict(question="What came into force?", sentence="The constitution came into force.", label=0),
     "qnli question: What came into force? sentence: The constitution came into force.", "entailment"),
    ("rte", dict(sentence1="Reeve died.", sentence2="Reeve had an accident.", label=1),
     "rte sentence1: Reeve died. sentence2: Reeve had an accident.", "not_entailment"),
    ("wnli", dict(sentence1="The drain is clogged with hair.", sentence2="The hair is clogged.", label=1),
     "wnli sentence1: The drain is clogged with hair. sentence2: The hair is clogged.", "entailment"),
]


@pytest.mark.parametrize("task,features,inputs,targets", KNOWN, ids=[k[0] for k in KNOWN])
def test_t5_text_to_text_format(task, features, inputs, targets):
    out = _format(task, idx=0, **features)
    assert out["inputs"] == inputs and out["targets"] == targets


def test_unlabelled_rows_and_stsb_rounding():
    assert _format("rte", sentence1="a", sentence2="b", label=-1, idx=0)["targets"] == "<unk>"
    for score, text in ((0.0, "0.0"), (2.49, "2.4"), (2.5, "2.4"), (2.51, "2.6"), (4.9, "4.8"), (5.0, "5.0")):
        # T5: round(score * 5) / 5 (half to even), one decimal.
        assert _format("stsb", sentence1="a", sentence2="b", label=score, idx=0)["targets"] == text, score


def test_metric_names_and_main_metric():
    names = {name: (task.metric_names, task.main_metric) for name, task in glue.TASKS.items()}
    assert names["cola"] == (["matthews_corrcoef"], "matthews_corrcoef")
    assert names["mrpc"] == (["f1", "accuracy"], "f1") and names["qqp"] == names["mrpc"]
    assert names["stsb"] == (["pearson_corrcoef", "spearman_corrcoef"], "pearson_corrcoef")
    assert all(names[t] == (["accuracy"], "accuracy") for t in ("sst2", "mnli", "qnli", "rte", "wnli"))


def test_postprocess_maps_labels_and_rejects_others():
    assert glue.postprocess("entailment", task=glue.TASKS["rte"]) == 0
    assert glue.postprocess(b"not_entailment", task=glue.TASKS["rte"]) == 1
    assert glue.postprocess("maybe", task=glue.TASKS["rte"]) == -1
    assert glue.postprocess("3.4", task=glue.TASKS["stsb"]) == pytest.approx(3.4)
    assert glue.postprocess("three", task=glue.TASKS["stsb"]) == -1.0


# Data rows of the local files (SOURCE.md of ../shared/data/glue).
ROWS = {("cola", "train"): 8551, ("cola", "validation"): 1043, ("sst2", "train"): 67349,
        ("sst2", "validation"): 872, ("mrpc", "train"): 3667, ("mrpc", "validation"): 408,
        ("stsb", "train"): 5749, ("stsb", "validation"): 1500, ("rte", "train"): 2490, ("rte", "validation"): 277,
        ("wnli", "train"): 635, ("wnli", "validation"): 71, ("qnli", "validation"): 5463,
        ("mnli", "validation_matched"): 9815}


@pytest.mark.parametrize("task,split", sorted(ROWS))
def test_local_files_read_completely_with_valid_labels(task, split):
    rows = glue.read_split(GLUE_DIR, glue.TASKS[task], split)
    assert len(rows) == ROWS[task, split]
    labels = np.array([r["label"] for r in rows])
    if glue.TASKS[task].labels is None:
        assert labels.min() >= 0 and labels.max() <= 5
    else:
        assert set(labels) == set(range(len(glue.TASKS[task].labels)))  # every class present, no -1
    assert all(r[f] for r in rows for f in glue.TASKS[task].features)


def test_mnli_label_counts_match_glue():
    rows = glue.read_split(GLUE_DIR, glue.TASKS["mnli"], "validation_matched")
    counts = np.bincount([r["label"] for r in rows])
    assert counts.tolist() == [3479, 3123, 3213]  # entailment, neutral, contradiction


def test_registered_tasks_tokenize_and_mixture_is_proportional(registered):
    assert "glue_test_qqp" not in registered  # no QQP files offline
    assert {"glue_test_sst2", "glue_test_mnli_matched"} <= set(registered)
    ds = seqio.get_mixture_or_task("glue_test_sst2").get_dataset({"inputs": 64, "targets": 4}, split="validation",
                                                                  shuffle=False)
    example = next(iter(ds))
    vocab = seqio.SentencePieceVocabulary(str(SPIECE), extra_ids=100)
    assert vocab.decode(example["inputs"].numpy().tolist()) == "sst2 sentence: it 's a charming and often affecting journey ."
    assert vocab.decode(example["targets"].numpy().tolist()) == "positive"
    assert example["targets"].numpy()[-1] == 1  # EOS
    mixture = seqio.get_mixture_or_task("glue_test")
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    assert set(rates) == {"glue_test_cola", "glue_test_sst2", "glue_test_mrpc", "glue_test_stsb", "glue_test_rte",
                          "glue_test_wnli"}
    assert rates["glue_test_sst2"] / rates["glue_test_rte"] == pytest.approx(67349 / 2490)


def test_equal_mixture_samples_each_task_as_often_and_leaves_out_wnli(registered):
    mixture = seqio.get_mixture_or_task("glue_test_equal")
    assert {t.name for t in mixture.tasks} == {"glue_test_cola", "glue_test_sst2", "glue_test_mrpc",
                                              "glue_test_stsb", "glue_test_rte"}
    ds = mixture.get_dataset({"inputs": 16, "targets": 4}, split="train", shuffle=True, seed=0,
                             passthrough_features=None, log_mixing_proportions=False)
    vocab = seqio.SentencePieceVocabulary(str(SPIECE), extra_ids=100)
    counts = {}
    for example in ds.take(1000).as_numpy_iterator():
        task = vocab.decode(example["inputs"][:8].tolist()).split()[0]
        counts[task] = counts.get(task, 0) + 1
    assert set(counts) == {"cola", "sst2", "mrpc", "stsb", "rte"}
    assert all(150 <= n <= 250 for n in counts.values()), counts  # 200 each; binomial sd 12.6


def test_missing_split_names_the_file(registered):
    with pytest.raises(ConfigError, match=r"qqp split .train.: no train\.tsv .*QQP"):
        glue.check_split("glue_test_qqp", "train", data_dir=GLUE_DIR, prefix="glue_test")
    with pytest.raises(ConfigError, match=r"qnli split .train.: no train\.tsv .*QNLI"):
        glue.check_split("glue_test_qnli", "train", data_dir=GLUE_DIR, prefix="glue_test")


def test_an_integer_label_out_of_range_is_named_before_training(tmp_path, capsys):
    """A local SST-2 row labelled 7 (two classes) is named by file and line, not a TF error from inside the
    input pipeline: an error under data.on_bad_input='error', a counted skip under 'skip'."""
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "dev.tsv").write_text("sentence\tlabel\na fine film\t1\na dull one\t7\n")
    with pytest.raises(ConfigError, match=r"dev.tsv line 3: label '7' is neither one of negative, positive"):
        glue.read_split(str(tmp_path), glue.TASKS["sst2"], "validation", on_bad_input="error")
    assert [r["sentence"] for r in glue.read_split(str(tmp_path), glue.TASKS["sst2"], "validation")] == ["a fine film"]
    assert "skipped 1 of 2 rows of" in capsys.readouterr().out


def _glue_dir(tmp_path, task_dir, name, text):
    folder = tmp_path / task_dir
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(tmp_path)


# (task, file, content, damaged line, its problem): each row of a damaged split that the reader must name.
DAMAGED = [
    # A row missing its label column: the old reader scored it as `<unk>` (label -1).
    ("sst2", "dev.tsv", "sentence\tlabel\na fine film\t1\na dull one\nbright\t0\n", 3,
     r"has 1 tab-separated fields, the header 2"),
    ("sst2", "dev.tsv", "sentence\tlabel\na fine film\t1\na dull one\tpositiv\nbright\t0\n", 3,
     r"label 'positiv' is neither one of negative, positive"),
    ("sst2", "dev.tsv", b"sentence\tlabel\na fine film\t1\na dull \xff one\t0\nbright\t0\n", 3,
     r"is not valid UTF-8 \(byte 8\)"),
    ("mnli", "dev_matched.jsonl", '{"premise": "p", "hypothesis": "h", "label": "neutral"}\n{"premise": "p2", '
     '"hypothesis": "h2", "label": "neutral"\n{"premise": "p3", "hypothesis": "h3", "label": 2}\n', 2,
     r"is not JSON"),
    ("mnli", "dev_matched.jsonl", '{"premise": "p", "hypothesis": "h", "label": "neutral"}\n{"premise": "p2", '
     '"hypothesis": "h2"}\n{"premise": "p3", "hypothesis": "h3", "label": 2}\n', 2, r"no label"),
    ("cola", "dev.tsv", "gj04\t1\t\tOne sentence.\ngj04\t0\t*\nclc95\t1\t\tAnother one.\n", 2,
     r"has 3 tab-separated fields, GLUE cola rows at least 4"),
]


@pytest.mark.parametrize("task,name,text,line,problem", DAMAGED, ids=[f"{d[0]}-{d[4][:12]}" for d in DAMAGED])
def test_a_damaged_row_is_named_or_skipped_and_counted(tmp_path, capsys, task, name, text, line, problem):
    """Under data.on_bad_input='error' a damaged row stops the reader with its file, line and the fix; under
    'skip' the other rows are read as they are and the count of skipped rows is printed with the line."""
    directory = _glue_dir(tmp_path, glue.TASKS[task].directory, name, text)
    split = "validation_matched" if task == "mnli" else "validation"
    with pytest.raises(ConfigError, match=rf"{name} line {line}: {problem}.*repair or delete that row.*"
                                          r"data.on_bad_input='skip'"):
        glue.read_split(directory, glue.TASKS[task], split, on_bad_input="error")
    rows = glue.read_split(directory, glue.TASKS[task], split, on_bad_input="skip")
    # idx is the row's place in the file (as TFDS numbers rows, and GLUE's test files' `index`)
    assert len(rows) == 2 and [r["idx"] for r in rows] == [0, 2] and -1 not in [r["label"] for r in rows]
    out = capsys.readouterr().out
    assert f"skipped 1 of 3 rows of {tmp_path / glue.TASKS[task].directory / name} (line {line}: " in out
    assert "data.on_bad_input='error' to stop" in out


def test_registration_checks_every_row_before_training(tmp_path, capsys):
    """The check runs when the Task's source is built (registration), not inside the tf.data pipeline, and
    the dev split's Task holds the rows kept."""
    directory = _glue_dir(tmp_path, "SST-2", "dev.tsv", "sentence\tlabel\na fine film\t1\na dull one\nbright\t0\n")
    _glue_dir(tmp_path, "SST-2", "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    with pytest.raises(ConfigError, match=r"SST-2/dev.tsv line 3: has 1 tab-separated fields"):
        glue.register(str(SPIECE), data_dir=directory, prefix="glue_damaged", on_bad_input="error")
    glue.register(str(SPIECE), data_dir=directory, prefix="glue_damaged", on_bad_input="skip")
    assert "GLUE sst2 validation: skipped 1 of 3 rows" in capsys.readouterr().out
    task = seqio.get_mixture_or_task("glue_damaged_sst2")
    assert task.num_input_examples("validation") == 2
    examples = list(task.get_dataset({"inputs": 16, "targets": 4}, split="validation",
                                     shuffle=False).as_numpy_iterator())
    assert [e["targets_pretokenized"].decode() for e in examples] == ["positive", "negative"]
    # idx, what a GLUE submission is keyed by, stays the row's place in the file past the skipped row
    assert [int(e["idx"]) for e in examples] == [0, 2]


# GLUE's test files as the download script leaves them (headers included; no labels), a few rows each.
TEST_FILES = {
    "cola": ("CoLA/test.tsv", ["index", "sentence"]),
    "sst2": ("SST-2/test.tsv", ["index", "sentence"]),
    "mrpc": ("MRPC/test.tsv", ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"]),
    "stsb": ("STS-B/test.tsv", ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                                "sentence1", "sentence2"]),
    "qqp": ("QQP/test.tsv", ["id", "question1", "question2"]),
    "mnli_matched": ("MNLI/test_matched.tsv", ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                                               "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
                                               "sentence1", "sentence2"]),
    "qnli": ("QNLI/test.tsv", ["index", "question", "sentence"]),
    "rte": ("RTE/test.tsv", ["index", "sentence1", "sentence2"]),
    "wnli": ("WNLI/test.tsv", ["index", "sentence1", "sentence2"]),
    "ax": ("diagnostic/diagnostic.tsv", ["index", "sentence1", "sentence2"]),
}
TEST_FILES["mnli_mismatched"] = ("MNLI/test_mismatched.tsv", TEST_FILES["mnli_matched"][1])
TEXTS = ["The cat sat on the mat .", 'He said "no" to the café\'s offer.', "Why is the sky blue?",
         "A man is playing a guitar.", "It rained all day in Zürich , so we stayed in."]
TEXT_COLUMNS = {"sentence", "#1 String", "#2 String", "sentence1", "sentence2", "question1", "question2",
                "question"}


def write_test_files(directory, rows=3) -> dict[str, int]:
    """Writes GLUE's unlabelled test files under `directory` ({TFDS config: row count}); text columns hold
    `TEXTS` in turn, the other columns placeholders, `index` (QQP: `id`) counts from 0."""
    counts = {}
    for n, (config, (path, header)) in enumerate(TEST_FILES.items()):
        count = rows + n % 3  # files of different lengths
        lines = ["\t".join(header)]
        for row in range(count):
            lines.append("\t".join(str(row) if column in ("index", "id") else
                                   TEXTS[(row + n + k) % len(TEXTS)] if column in TEXT_COLUMNS else f"x{k}"
                                   for k, column in enumerate(header)))
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[config] = count
    return counts


def t5_test_examples(directory, config: str) -> list[dict]:
    """T5's examples of the test file of TFDS config `config`: TFDS `glue`'s own reader over the file, then
    T5's `get_glue_text_preprocessor` (inputs, targets, idx)."""
    import tensorflow_datasets as tfds
    from t5.data import glue_utils
    builder = tfds.text.glue.Glue(config=config, data_dir=str(directory / "tfds"))
    path = str(directory / TEST_FILES[config][0])
    if config == "mrpc":
        rows = [e for _, e in builder._generate_examples(None, "test", mrpc_files={"test": path})]
    else:
        rows = [e for _, e in builder._generate_examples(data_file=path, split="test")]
    dataset = tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in rows[0]})
    preprocess = glue_utils.get_glue_text_preprocessor(builder.builder_config)
    return [{"inputs": x["inputs"].decode(), "targets": x["targets"].decode(), "idx": int(x["idx"])}
            for x in preprocess(dataset).as_numpy_iterator()]


# The project's Task and split of each TFDS config's test set.
TEST_SPLITS = {"cola": ("cola", "test"), "sst2": ("sst2", "test"), "mrpc": ("mrpc", "test"),
               "stsb": ("stsb", "test"), "qqp": ("qqp", "test"), "mnli_matched": ("mnli_matched", "test"),
               "mnli_mismatched": ("mnli_mismatched", "test"), "qnli": ("qnli", "test"), "rte": ("rte", "test"),
               "wnli": ("wnli", "test"), "ax": ("ax", "test")}


@pytest.fixture(scope="module")
def glue_test_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("glue_test_files")
    counts = write_test_files(directory)
    names = glue.register(str(SPIECE), data_dir=str(directory), prefix="glue_tf")
    return directory, counts, names


@pytest.mark.parametrize("config", sorted(TEST_SPLITS))
def test_unlabelled_test_splits_equal_t5s_examples(glue_test_dir, config):
    """Every GLUE test set (AX cast as MNLI) read from GLUE's files gives T5's inputs and targets (`<unk>`,
    STS-B `-1.0`) and TFDS's idx, row for row; MNLI's also as glue_mnli's test_matched/test_mismatched."""
    directory, counts, _ = glue_test_dir
    task, split = TEST_SPLITS[config]
    expected = t5_test_examples(directory, config)
    assert len(expected) == counts[config]
    names = [(f"glue_tf_{task}", split)]
    if task.startswith("mnli_"):
        names.append(("glue_tf_mnli", "test_" + task[5:]))
    for name, split in names:
        dataset = seqio.get_mixture_or_task(name).get_dataset({"inputs": 128, "targets": 8}, split=split,
                                                               shuffle=False, use_cached=False)
        ours = [{"inputs": x["inputs_pretokenized"].decode(), "targets": x["targets_pretokenized"].decode(),
                 "idx": int(x["idx"])} for x in dataset.as_numpy_iterator()]
        assert ours == expected, name
        assert glue.unlabelled(name, split, prefix="glue_tf")


def test_test_sets_form_the_submission_mixture(glue_test_dir):
    _, _, names = glue_test_dir
    mixture = seqio.get_mixture_or_task("glue_tf_submission")
    assert {t.name for t in mixture.tasks} == {f"glue_tf_{task}" for task, _ in TEST_SPLITS.values()}
    assert seqio.get_mixture_or_task("glue_tf_ax").splits == ("test",)
    assert glue.task_of("glue_tf_ax", "glue_tf").metric_fns == ()  # T5: "Only test set available."
    assert not glue.unlabelled("glue_tf_rte", "validation", prefix="glue_tf")


def test_a_missing_test_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"sst2 split .test.: no test\.tsv or test\.jsonl in .*/SST-2;"):
        glue.check_split("glue_sst2", "test", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"ax split .test.: no diagnostic\.tsv .*AX\.tsv.* in "
                                          r".*/diagnostic or .*/AX or .*/;"):
        glue.check_split("glue_ax", "test", data_dir=str(tmp_path))
    (tmp_path / "AX.tsv").write_text("index\tsentence1\tsentence2\n0\tA.\tB.\n")  # as GLUE serves it
    assert glue.split_file(str(tmp_path), glue.TASKS["ax"], "test") == str(tmp_path / "AX.tsv")
    with pytest.raises(ConfigError, match=r"mnli_matched has no split 'train'; use one of validation, test"):
        glue.check_split("glue_mnli_matched", "train", data_dir=str(tmp_path))
