"""The demo's inputs, built offline from what Python installs (its training stages are the CLI's,
tested elsewhere; `make demo` runs them)."""

import os

from miniend_jax import demo
from miniend_jax.evaluation.metrics import split_sentences
from tasks import glue


def test_corpus_vocabulary_and_acceptability_task(tmp_path):
    corpus, heldout = demo.build_corpus(str(tmp_path))
    train = open(os.path.join(corpus, "a_train.txt"), encoding="utf-8").read().splitlines()
    assert len(train) > 5000 and len(heldout) > 300
    model = str(tmp_path / "spm.model")
    demo.train_vocabulary(corpus, model, 500)
    import sentencepiece as spm
    processor = spm.SentencePieceProcessor(model_file=model)
    assert processor.get_piece_size() == 500
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (0, 1, 2, -1)
    ids = processor.encode(heldout[0])
    assert processor.decode(ids) == heldout[0]
    n_train, n_dev = demo.build_acceptability_task(corpus, heldout, str(tmp_path / "glue"))
    assert n_train == 3000 and n_dev > 100
    rows = glue.read_split(str(tmp_path / "glue"), glue.TASKS["cola"], "validation")
    labels = [r["label"] for r in rows]
    assert abs(sum(labels) - len(labels) / 2) <= 1
    originals = {s for p in heldout for s in split_sentences(p)}
    for row in rows:
        assert (row["sentence"] in originals) == (row["label"] == 1)
        if row["label"] == 0:
            assert any(sorted(row["sentence"].split()) == sorted(o.split()) for o in originals)
