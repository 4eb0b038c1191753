"""The demo's inputs, built offline from what Python installs (its training stages are the CLI's,
tested elsewhere; `make demo` runs them)."""

import os

from miniend_jax import demo
from miniend_jax.checkpoints.tokenizer import train_sentencepiece
from tasks import classification


def test_corpus_vocabulary_and_downstream_task(tmp_path):
    documents = demo.documentation_texts()
    assert len(documents) > 1000 and sum(s == "reference" for s, _ in documents) > 50
    corpus = demo.build_corpus(str(tmp_path), documents)
    train = open(os.path.join(corpus, "a_train.txt"), encoding="utf-8").read().splitlines()
    heldout = open(os.path.join(corpus, "b_heldout.txt"), encoding="utf-8").read().splitlines()
    assert len(train) > 5000 and len(heldout) > 300
    assert not set(heldout) & set(train)

    model = str(tmp_path / "spm.model")
    train_sentencepiece(os.path.join(corpus, "a_train.txt"), model, 500)
    import sentencepiece as spm
    processor = spm.SentencePieceProcessor(model_file=model)
    assert processor.get_piece_size() == 500
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (0, 1, 2, -1)
    assert processor.decode(processor.encode(heldout[0])) == heldout[0]

    folder = str(tmp_path / "docs_package")
    n_train, n_dev, labels = demo.build_package_task(documents, folder)
    assert len(labels) == 6 and n_train > 3 * n_dev > 150
    dev = classification.read_split(folder, "validation")
    assert {label for _, label in dev} == set(labels)
    train_texts = {text for text, _ in classification.read_split(folder, "train")}
    assert sum(text in train_texts for text, _ in dev) < 0.05 * len(dev)
