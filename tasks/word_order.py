"""Word order: a pretraining probe written as a text classification task (tasks/classification.py).

Each example is a window of consecutive words of a line of text, labelled `original`, or `swapped` when
two of its inner words (neither the first nor the last, so capitalisation and the closing punctuation
stay where they were) have been exchanged: two adjacent words, SentEval's bigram-shift probe (BShift,
Conneau et al., 2018, "What you can cram into a single vector"), or any two (`adjacent=False`, easier).
Whether a window reads in its original order is knowledge of the language that pretraining on similar
text gives and that a randomly initialised model must learn from the task's few examples: the probe
shows whether a downstream score can see pretraining.

Every window comes from a different stretch of text (no window's original and swapped forms are both
in the data); the labels are balanced; everything is drawn from one seed, so the data are the same on
every machine.
"""

from __future__ import annotations

import os
import random

from miniend_jax.errors import ConfigError

LABELS = ("original", "swapped")


def windows(lines, words: int) -> list[list[str]]:
    """The non-overlapping windows of `words` whitespace-separated words of each line, in order (a line's
    shorter remainder is dropped)."""
    out = []
    for line in lines:
        tokens = line.split()
        out.extend(tokens[i:i + words] for i in range(0, len(tokens) - words + 1, words))
    return out


def swap_two(window: list[str], rng: random.Random, adjacent: bool = True) -> list[str]:
    """`window` with two different inner words exchanged (`adjacent`: neighbours). Raises ValueError when
    no such pair differs (the swap would leave the text unchanged)."""
    inner = range(1, len(window) - 1)
    pairs = [(i, j) for i in inner for j in inner
             if i < j and (j == i + 1 or not adjacent) and window[i] != window[j]]
    if not pairs:
        raise ValueError(f"no two different inner words to swap in {' '.join(window)!r}")
    i, j = rng.choice(pairs)
    out = list(window)
    out[i], out[j] = out[j], out[i]
    return out


def examples(lines, count: int, *, words: int, seed: int, adjacent: bool = True) -> list[tuple[str, str]]:
    """`count` (text, label) pairs from the windows of `lines`: a seeded sample of windows, every other one
    (after shuffling) swapped. Raises ConfigError when the text holds fewer than `count` usable windows."""
    rng = random.Random(seed)
    usable = [w for w in windows(lines, words) if len(set(w[1:-1])) > 1]
    if len(usable) < count:
        raise ConfigError(f"the text holds {len(usable)} windows of {words} words, {count} are needed: "
                          "give more text, or ask for fewer examples or shorter windows.")
    chosen = rng.sample(usable, count)
    return [(" ".join(swap_two(w, rng, adjacent)), LABELS[1]) if k % 2 else (" ".join(w), LABELS[0])
            for k, w in enumerate(chosen)]


def write_task(folder: str, train_lines, dev_lines, *, train: int, dev: int, words: int = 12,
               seed: int = 0, adjacent: bool = True) -> str:
    """Writes `folder`/train.tsv and dev.tsv (`text<TAB>label`; tasks.classification reads them as the Task
    `cls_<basename>`) unless dev.tsv is already there; returns `folder`. The training windows come from
    `train_lines`, the dev windows from `dev_lines` (give held-out text there)."""
    if os.path.exists(os.path.join(folder, "dev.tsv")):
        return folder
    os.makedirs(folder, exist_ok=True)
    for name, lines, count, offset in (("train.tsv", train_lines, train, 0), ("dev.tsv", dev_lines, dev, 1)):
        rows = examples(lines, count, words=words, seed=seed + offset, adjacent=adjacent)
        path = os.path.join(folder, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(f"{text.replace(chr(9), ' ')}\t{label}\n" for text, label in rows)
        os.replace(path + ".tmp", path)
    return folder
