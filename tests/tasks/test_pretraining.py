"""Pretraining Tasks: readers for every file format, the pipeline on real text, per-host sharding."""

import gzip
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from miniend_jax.errors import ConfigError
from tasks.pretraining import (detect_format, get_dataset, make_reader, register_local_span_corruption,
                               resolve_files, task_feature_lengths)
from tests.conftest import SHARED_DATA, SPIECE

WIKI = str(SHARED_DATA / "enwiki_2015_extract" / "AA" / "wiki_0*.gz")


def _texts(path, fmt, **kw):
    return [x["text"].numpy().decode() for x in make_reader(fmt, **kw)(tf.constant(path))]


def test_readers_for_every_format(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_text("First paragraph.\n\n  Second one.  \n")
    assert detect_format(str(plain)) == "text"
    assert _texts(str(plain), "text") == ["First paragraph.", "Second one."]

    records = [{"text": "alpha beta"}, {"body": "no text field"}, {"text": "gamma"}]
    jsonl = tmp_path / "b.jsonl.gz"
    with gzip.open(jsonl, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in records) + "\n")
    assert detect_format(str(jsonl)) == "jsonl"
    assert _texts(str(jsonl), "jsonl") == ["alpha beta", "gamma"]
    assert _texts(str(jsonl), "jsonl", text_field="body") == ["no text field"]

    wiki = tmp_path / "wiki_00"
    wiki.write_text('<doc id="1" url="u" title="Anarchism">\nAnarchism\n\nAnarchism is a philosophy.\n</doc>\n'
                    '<doc id="2" url="v" title="Autism">\nAutism\n\nAutism is a disorder.\n</doc>\n')
    assert detect_format(str(wiki)) == "wikiextractor"
    assert _texts(str(wiki), "wikiextractor") == ["Anarchism", "Anarchism is a philosophy.", "Autism",
                                                  "Autism is a disorder."]


def test_real_wikiextractor_shards_are_detected():
    files = resolve_files(WIKI)
    assert len(files) == 10 and detect_format(files[0]) == "wikiextractor"
    texts = _texts(files[0], "wikiextractor")
    assert len(texts) > 1000 and not any(t.startswith("<doc") or t == "</doc>" for t in texts)


def test_missing_corpus_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="matches no file"):
        resolve_files(str(tmp_path / "*.txt"))


@pytest.mark.parametrize("pack", [False, True])
def test_span_corruption_batches_on_real_text(pack):
    name = register_local_span_corruption(WIKI, str(SPIECE), validation_files=2)
    lengths = task_feature_lengths(128)
    batch = next(iter(get_dataset(name, lengths, split="train", batch_size=4, pack=pack, shuffle=True, seed=1)))
    batch = {k: v.numpy() for k, v in batch.items()}
    assert batch["encoder_input_tokens"].shape == (4, 128)
    assert batch["decoder_target_tokens"].shape == (4, lengths["targets"])
    # decoder inputs are the targets shifted right (restarting at each packed segment)
    if pack:
        assert {"encoder_segment_ids", "decoder_segment_ids"} <= set(batch)
    else:
        np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], batch["decoder_target_tokens"][:, :-1])
        for row in range(4):
            inputs = batch["encoder_input_tokens"][row]
            targets = batch["decoder_target_tokens"][row]
            n_in, n_tgt = (inputs > 0).sum(), (targets > 0).sum()
            assert inputs[n_in - 1] == 1 and targets[n_tgt - 1] == 1  # EOS ends both
            sentinels_in = [t for t in inputs if t >= 32000]
            sentinels_tgt = [t for t in targets if t >= 32000]
            assert sentinels_in == sentinels_tgt == list(range(32099, 32099 - len(sentinels_in), -1))
            noise = n_tgt - 1 - len(sentinels_tgt)
            original = n_in - 1 - len(sentinels_in) + noise
            assert noise == round(original * 0.15)


def test_hosts_read_disjoint_files():
    name = register_local_span_corruption(WIKI, str(SPIECE), validation_files=2)
    lengths = task_feature_lengths(64)
    firsts = []
    for index in range(2):
        ds = get_dataset(name, lengths, split="train", batch_size=2, pack=False, shuffle=False, seed=0,
                         num_epochs=1, shard_index=index, num_shards=2)
        firsts.append({tuple(r) for b in ds.take(30) for r in b["encoder_input_tokens"].numpy()})
    assert firsts[0] and firsts[1] and not firsts[0] & firsts[1]


def test_c4_task_is_defined_without_fetching():
    import seqio
    from tasks.pretraining import register_c4_span_corruption
    name = register_c4_span_corruption(str(SPIECE), tfds_name="c4/en:3.1.0", data_dir="/nonexistent/tfds")
    task = seqio.get_mixture_or_task(name)
    assert isinstance(task.source, seqio.TfdsDataSource)
    assert task.source.tfds_dataset.name == "c4/en:3.1.0"
    assert task.output_features["targets"].vocabulary.vocab_size == 32100


def _faulty_corpus(tmp_path):
    directory = tmp_path / "faulty"
    directory.mkdir()
    (directory / "a_good.txt").write_text("A good paragraph.\n\n\nAnother good one.\n")
    (directory / "b_bad_utf8.txt").write_bytes(b"fine line\n\xff\xfe broken bytes\nalso fine\n")
    (directory / "c_overlong.txt").write_text("short\n" + "x" * 500 + "\n")
    with gzip.open(directory / "d_corrupt.gz", "wb") as f:
        f.write(b"some text that will be cut\n" * 200)
    data = (directory / "d_corrupt.gz").read_bytes()
    (directory / "d_corrupt.gz").write_bytes(data[: len(data) // 2])
    return directory


def test_faulty_inputs_are_skipped_and_counted(tmp_path):
    from tasks.pretraining import scan_files
    directory = _faulty_corpus(tmp_path)
    files = resolve_files(str(directory / "*"))
    report = scan_files(files, max_line_chars=100, on_bad_input="skip")
    assert [os.path.basename(f) for f in report.files] == ["a_good.txt", "b_bad_utf8.txt", "c_overlong.txt"]
    assert list(map(os.path.basename, report.unreadable)) == ["d_corrupt.gz"]
    assert (report.invalid_utf8_lines, report.overlong_lines, report.empty_lines) == (1, 1, 2)
    assert "skipped 1 unreadable file(s): d_corrupt.gz" in report.summary()
    # The first skipped line is named by file and line, with the setting that stops at it.
    assert (f"first skipped: {directory / 'b_bad_utf8.txt'}: line 2 is not valid UTF-8 "
            "(data.on_bad_input='error' stops at it)") in report.summary()
    # The reader drops the same lines.
    assert _texts(str(directory / "b_bad_utf8.txt"), "text") == ["fine line", "also fine"]
    assert [x["text"].numpy().decode() for x in make_reader("text", max_line_chars=100)(
        tf.constant(str(directory / "c_overlong.txt")))] == ["short"]


@pytest.mark.parametrize("name,message", [("b_bad_utf8.txt", "line 2 is not valid UTF-8"),
                                          ("c_overlong.txt", "line 2 has 500 characters"),
                                          ("d_corrupt.gz", "unreadable")])
def test_faulty_inputs_stop_the_run_when_asked(tmp_path, name, message):
    from tasks.pretraining import scan_files
    directory = _faulty_corpus(tmp_path)
    with pytest.raises(ConfigError, match=f"{name}: {message}.*on_bad_input='skip'"):
        scan_files([str(directory / name)], max_line_chars=100, on_bad_input="error")


def test_a_corpus_file_named_with_glob_characters_is_read_as_itself(tmp_path):
    """seqio's own file listing would glob `wiki[1].txt` again (matching `wiki1.txt`, or nothing)."""
    text = "\n".join(f"Paragraph {i} of a file with brackets in its name." for i in range(40))

    def batches(folder, name):
        (folder / name).write_text(text)
        (folder / "zz_held_out.txt").write_text("A held-out paragraph.\n")  # sorts last: the held-out file
        task = register_local_span_corruption(str(folder / "*.txt"), str(SPIECE), validation_files=1)
        dataset = get_dataset(task, {"inputs": 32, "targets": 8}, split="train", batch_size=1, pack=False,
                              shuffle=False, seed=0, num_epochs=1)
        return [b["encoder_input_tokens"].tolist() for b in dataset.as_numpy_iterator()]

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    plain = batches(tmp_path / "a", "wiki1.txt")
    assert len(plain) > 10 and batches(tmp_path / "b", "wiki[1].txt") == plain
