"""Every documented corpus format end to end: files -> pre-flight scan -> tokenization -> span corruption
-> packed batches -> train steps, with the decoded batches holding the documents' words and nothing else
(no JSON syntax, no WikiExtractor tags), for each format alone and for a glob that mixes them."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import seqio

from miniend_jax.errors import ConfigError
from tasks.pretraining import get_dataset, register_local_span_corruption, resolve_files, scan_files
from tasks.lengths import task_feature_lengths
from tests.conftest import ROOT, SPIECE

WORDS = ("river", "mountain", "quiet", "village", "harbour", "lantern", "orchard", "winter", "meadow",
         "copper", "signal", "garden", "thunder", "ribbon", "candle", "marble")
# Each file's documents open with a tag word naming the file, so the batches show which files were read.
FILES = {"plain.txt": "plaintag", "plaingz.txt.gz": "plaingztag", "records.jsonl": "jsonltag",
         "recordsgz.jsonl.gz": "jsonlgztag", "wiki_00": "wikitag", "wiki_01.gz": "wikigztag"}
BAD_JSONL = ['{"body": "missingfieldtag river"}', '{"text": 7}', "not json at all missingjsontag", '["listtag"]']


def _documents(tag, rng, count=12):
    return [" ".join([tag] + list(rng.choice(WORDS, size=int(rng.integers(20, 40))))) for _ in range(count)]


def _write(path, text):
    if path.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def write_corpus(directory, names, bad_jsonl=()):
    """Writes each named file of FILES in its format (by its name); returns the documents written."""
    rng = np.random.default_rng(0)
    documents = {}
    for name in names:
        docs = _documents(FILES[name], rng)
        documents[name] = docs
        if ".jsonl" in name:
            lines = [json.dumps({"id": i, "text": d, "meta": {"source": "test"}}) for i, d in enumerate(docs)]
            text = "\n".join(lines[:3] + list(bad_jsonl) + lines[3:]) + "\n"
        elif name.startswith("wiki"):
            text = "".join(f'<doc id="{i}" url="https://x/{i}" title="{d.split()[1]}">\n{d.split()[1]}\n\n{d}\n</doc>\n'
                           for i, d in enumerate(docs))
        else:
            text = "\n\n".join(docs) + "\n"
        _write(str(directory / name), text)
    return documents


def _examples(batch):
    """(inputs, targets) token lists of every example in a packed batch, split by segment id."""
    for row in range(batch["encoder_input_tokens"].shape[0]):
        enc, dec = batch["encoder_input_tokens"][row], batch["decoder_target_tokens"][row]
        enc_seg, dec_seg = batch["encoder_segment_ids"][row], batch["decoder_segment_ids"][row]
        for segment in sorted(set(enc_seg[enc_seg > 0])):
            yield list(enc[enc_seg == segment]), list(dec[dec_seg == segment])


def uncorrupt(inputs, targets, first_sentinel):
    """The original tokens of a span-corrupted example: each sentinel of the inputs replaced by the span
    that follows the same sentinel in the targets (EOS dropped)."""
    spans, current = {}, None
    for token in targets:
        if token >= first_sentinel:
            current = spans.setdefault(token, [])
        elif token > 1 and current is not None:
            current.append(token)
    out = []
    for token in inputs:
        if token >= first_sentinel:
            out.extend(spans.get(token, []))
        elif token > 1:
            out.append(token)
    return out


def decoded_words(task_name, split="train", batches=None):
    """Words of every example, reconstructed from a packed, unshuffled pass over the split. The first and
    last word of an example may be a piece of a word (examples are cut at token boundaries)."""
    vocab = seqio.SentencePieceVocabulary(str(SPIECE), extra_ids=100)
    first_sentinel = vocab.vocab_size - 100
    ds = get_dataset(task_name, task_feature_lengths(64), split=split, batch_size=4, pack=True, shuffle=False,
                     seed=0, num_epochs=1)
    texts = []
    for i, batch in enumerate(ds.as_numpy_iterator()):
        if batches is not None and i >= batches:
            break
        for inputs, targets in _examples(batch):
            texts.append(vocab.decode(uncorrupt(inputs, targets, first_sentinel)))
    return texts


def _assert_only_document_words(texts, documents):
    allowed = {w for docs in documents.values() for d in docs for w in d.split()}
    assert texts
    for text in texts:
        for mark in ("{", "}", '"', ":", "<", ">", "text", "doc"):
            assert mark not in text, (mark, text)
        inner = text.split()[1:-1]
        assert set(inner) <= allowed, (set(inner) - allowed, text)


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_format_alone_reads_the_documents_only(tmp_path, name):
    documents = write_corpus(tmp_path, [name])
    report = scan_files(resolve_files(str(tmp_path / "*")), max_line_chars=10_000)
    expected = "jsonl" if ".jsonl" in name else "wikiextractor" if name.startswith("wiki") else "text"
    assert list(report.formats.values()) == [expected]
    task = register_local_span_corruption(report.files, str(SPIECE), name=f"formats_{name.replace('.', '_')}")
    texts = decoded_words(task)
    _assert_only_document_words(texts, documents)
    assert FILES[name] in " ".join(texts)


def test_a_mixed_glob_reads_each_file_in_its_own_format(tmp_path):
    """All six files in one glob (`data.format=auto`, whichever sorts first): every file's documents
    arrive as text; the scan counts the bad jsonl records that the reader drops."""
    documents = write_corpus(tmp_path, sorted(FILES), bad_jsonl=BAD_JSONL)
    files = resolve_files(str(tmp_path / "*"))
    report = scan_files(files, max_line_chars=10_000)
    assert report.formats == {str(tmp_path / n): ("jsonl" if ".jsonl" in n else "wikiextractor"
                                                  if n.startswith("wiki") else "text") for n in FILES}
    assert report.bad_json_lines == 2 * len(BAD_JSONL)  # in records.jsonl and recordsgz.jsonl.gz
    assert "(2 jsonl, 2 text, 2 wikiextractor)" in report.summary()
    assert f"skipped {2 * len(BAD_JSONL)} jsonl line(s) without a string text field" in report.summary()
    task = register_local_span_corruption(report.files, str(SPIECE), name="formats_mixed")
    texts = decoded_words(task)
    _assert_only_document_words(texts, documents)
    joined = " ".join(texts)
    assert all(tag in joined for tag in FILES.values()), [t for t in FILES.values() if t not in joined]
    for dropped in ("missingfieldtag", "missingjsontag", "listtag"):
        assert dropped not in joined


def test_a_bad_jsonl_record_stops_the_run_when_asked(tmp_path):
    write_corpus(tmp_path, ["records.jsonl"], bad_jsonl=BAD_JSONL[:1])
    with pytest.raises(ConfigError, match=r"records.jsonl: line 4 is not a JSON object with a string field "
                                          r"'text' \(set data.text_field.*on_bad_input='skip'"):
        scan_files(resolve_files(str(tmp_path / "*")), max_line_chars=10_000, on_bad_input="error")
    # Another text field: every line lacks it, so nothing is left to read.
    report = scan_files(resolve_files(str(tmp_path / "*")), max_line_chars=10_000, text_field="body")
    assert report.bad_json_lines == 12


def test_pretraining_on_a_mixed_glob_runs_from_the_cli(tmp_path):
    """`mode=pretrain` for two steps on all six formats in one glob, held-out file included: exits 0 and
    logs finite losses."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_corpus(corpus, sorted(FILES), bad_jsonl=BAD_JSONL)
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "miniend_jax.main", "--config=tests/configs/tiny.py", f"--workdir={workdir}",
         "--config.mode=pretrain", "--config.train.steps=2", "--config.train.checkpoint_every=2",
         f"--config.data.files={corpus}/*", "--config.data.validation_files=1", "--config.data.format=auto",
         "--config.train.eval_batches=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(2 jsonl, 2 text, 2 wikiextractor)" in result.stdout
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))


@pytest.mark.parametrize("name", ["edge.txt", "edge.jsonl"])
def test_the_scan_counts_exactly_the_lines_the_reader_drops(tmp_path, name):
    """Windows line ends, a line of only a no-break space (not ASCII whitespace: kept by both), a line of
    two-byte characters at the 40-character limit (kept by both: the limit counts characters, not bytes),
    a 41-character line (dropped by both), blank lines and, in jsonl, records whose text is blank."""
    import tensorflow as tf
    from tasks.pretraining import make_reader
    jsonl = name.endswith(".jsonl")
    accented = "\u00e9" * (28 if jsonl else 40)  # 40 characters with the JSON around it, 68 or 80 bytes
    texts = ["first line", "\u00a0", accented, "y" * 41, "   ", "", "last line"]
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts] if jsonl else texts
    if jsonl:
        lines[3] = "y" * 41
    (tmp_path / name).write_bytes("\r\n".join(lines).encode("utf-8") + b"\r\n")
    report = scan_files([str(tmp_path / name)], max_line_chars=40)
    kept = [x["text"].numpy().decode() for x in make_reader(report.formats, max_line_chars=40)(
        tf.constant(str(tmp_path / name)))]
    dropped = report.invalid_utf8_lines + report.overlong_lines + report.bad_json_lines + report.empty_lines
    assert len(kept) == report.lines - dropped == 4, (kept, report)
    assert accented in kept and "\u00a0" in kept and report.overlong_lines == 1
