"""The word-order probe's data: windows, swaps, balance, determinism, and the errors on too little text."""

import os

import pytest

from miniend_jax.errors import ConfigError
from tasks import classification, word_order

LINES = [" ".join(f"w{i}_{j}" for j in range(30)) for i in range(40)]  # every word distinct


def test_windows_are_disjoint_stretches_of_each_line():
    windows = word_order.windows(["a b c d e f g", "h i"], 3)
    assert windows == [["a", "b", "c"], ["d", "e", "f"]]  # the remainder "g" and the short line are dropped


@pytest.mark.parametrize("adjacent", [True, False])
def test_a_swap_exchanges_two_inner_words_and_nothing_else(adjacent):
    import random
    rng = random.Random(0)
    window = [f"x{k}" for k in range(12)]
    for _ in range(200):
        swapped = word_order.swap_two(window, rng, adjacent)
        moved = [k for k in range(12) if swapped[k] != window[k]]
        assert len(moved) == 2 and 0 not in moved and 11 not in moved
        i, j = moved
        assert swapped[i] == window[j] and swapped[j] == window[i]
        if adjacent:
            assert j == i + 1
    with pytest.raises(ValueError, match="no two different inner words"):
        word_order.swap_two(["a", "b", "b", "c"], rng)


def test_examples_are_balanced_distinct_and_the_same_for_a_seed():
    rows = word_order.examples(LINES, 60, words=10, seed=3)
    assert [label for _, label in rows].count("swapped") == 30
    assert len({text for text, _ in rows}) == 60
    originals = {" ".join(w) for w in word_order.windows(LINES, 10)}
    for text, label in rows:  # an original window is unchanged, a swapped one is not any window
        assert (text in originals) == (label == "original")
    assert rows == word_order.examples(LINES, 60, words=10, seed=3)
    assert rows != word_order.examples(LINES, 60, words=10, seed=4)


def test_write_task_is_read_as_a_classification_task(tmp_path):
    folder = word_order.write_task(str(tmp_path / "order"), LINES[:30], LINES[30:], train=80, dev=20, words=10)
    assert classification.labels_of(folder) == word_order.LABELS
    train = classification.read_split(folder, "train")
    dev = classification.read_split(folder, "validation")
    assert len(train) == 80 and len(dev) == 20
    assert not {t for t, _ in train} & {t for t, _ in dev}  # dev windows come from the other lines
    mtime = os.stat(os.path.join(folder, "dev.tsv")).st_mtime_ns
    word_order.write_task(folder, LINES[:30], LINES[30:], train=80, dev=20, words=10)
    assert os.stat(os.path.join(folder, "dev.tsv")).st_mtime_ns == mtime  # written once


def test_too_little_text_names_the_shortfall(tmp_path):
    with pytest.raises(ConfigError, match=r"the text holds 30 windows of 10 words, 31 are needed"):
        word_order.write_task(str(tmp_path / "order"), LINES[:10], LINES[30:], train=31, dev=5, words=10)
    assert not os.path.exists(tmp_path / "order" / "dev.tsv")
