"""Registering a Task name again: the same definition keeps the registered Task, another definition (here a
different vocabulary file, or data directory) replaces it and the Mixtures that hold it, in every module
that registers Tasks."""

import shutil

import seqio

from tasks import classification, glue, pretraining, summarization
from tests.conftest import SHARED_DATA, SPIECE


def _vocab_file(name):
    return seqio.get_mixture_or_task(name).output_features["targets"].vocabulary.sentencepiece_model_file


def test_a_second_vocabulary_replaces_the_glue_tasks_and_their_mixture(tmp_path):
    other = str(tmp_path / "other.model")
    shutil.copy(SPIECE, other)
    glue.register(str(SPIECE), data_dir=str(SHARED_DATA / "glue"), prefix="glue_reg")
    first = seqio.get_mixture_or_task("glue_reg_sst2")
    glue.register(str(SPIECE), data_dir=str(SHARED_DATA / "glue"), prefix="glue_reg")
    assert seqio.get_mixture_or_task("glue_reg_sst2") is first          # same definition: kept

    glue.register(other, data_dir=str(SHARED_DATA / "glue"), prefix="glue_reg")
    assert _vocab_file("glue_reg_sst2") == other
    for mixture in ("glue_reg", "glue_reg_equal"):
        tasks = {t.name: t for t in seqio.get_mixture_or_task(mixture).tasks}
        assert tasks["glue_reg_sst2"] is seqio.get_mixture_or_task("glue_reg_sst2")


def test_a_second_data_directory_replaces_the_glue_task(tmp_path):
    subset = tmp_path / "glue"
    shutil.copytree(SHARED_DATA / "glue" / "RTE", subset / "RTE")
    glue.register(str(SPIECE), data_dir=str(SHARED_DATA / "glue"), prefix="glue_dir")
    glue.register(str(SPIECE), data_dir=str(subset), prefix="glue_dir")
    assert [t.name for t in seqio.get_mixture_or_task("glue_dir").tasks] == ["glue_dir_rte"]


def test_summarization_classification_and_pretraining_follow_the_vocabulary(tmp_path):
    other = str(tmp_path / "other.model")
    shutil.copy(SPIECE, other)
    folder = tmp_path / "reviews"
    folder.mkdir()
    (folder / "train.tsv").write_text("good film\tpositive\nbad film\tnegative\n")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one line of text\nanother line\n")
    for vocab in (str(SPIECE), other):
        names = summarization.register(vocab, data_dir=str(SHARED_DATA), prefix="summ_reg")
        names.append(classification.register(str(folder), vocab))
        names.append(pretraining.register_local_span_corruption(str(corpus), vocab, name="span_reg"))
        assert {_vocab_file(n) for n in names} == {vocab}
