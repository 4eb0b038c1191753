"""`make demo`: the whole MiniEnD story at toy scale, offline, on 2 CPU cores in about 11 minutes.

1. Corpus: CPython's own documentation, which every Python installation carries (the language reference
   topics of `pydoc_data` and the standard library's docstrings), split into training text and held-out
   text (every 20th document).
2. A SentencePiece vocabulary (2,000 pieces, plus T5's 100 sentinels) trained on the training text.
3. A teacher (T5 v1.1 shape, 3+3 layers, width 128) pretrained by span corruption.
4. Two students of one shape (2+2 layers, width 64, about 1/5 of the teacher's forward FLOPs), trained for
   the same steps and batch: MiniEnD-E distilled from the teacher, and from scratch.
5. Held-out span-corruption loss of the three, and a downstream score: each model, and the student's
   shape with no pretraining at all (random init), finetuned with three seeds on a small classification
   task (which standard-library package a docstring documents, six packages), scored by decoding its dev
   set (accuracy, macro-F1).
6. A table on the console and in workdirs/demo/results.md: scores as mean ± std over the seeds, and each
   row's accuracy minus the random-init and the scratch rows' (paired by seed, 95% t interval), marked
   significant or within noise; the loss curves in workdirs/demo/curves.png.

Stages that already finished are reused, so a second `make demo` only prints the results. The same
pipeline on a real corpus, a real teacher and a pod: see README.md.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import sys
import sysconfig
import time

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 8]


def documentation_texts() -> list[tuple[str, str]]:
    """CPython's prose documentation as (source, text): pydoc's reference topics (source "reference") and
    the stdlib docstrings (source: the package, or "" for top-level modules), sorted, so the corpus is
    the same on every machine with the same Python."""
    import pydoc_data.topics
    documents = [("reference", pydoc_data.topics.topics[k]) for k in sorted(pydoc_data.topics.topics)]
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")) + glob.glob(os.path.join(stdlib, "*", "*.py")))
    for path in files:
        if os.sep + "test" in path or "idlelib" in path or "site-packages" in path:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    package = os.path.relpath(path, stdlib).split(os.sep)
                    documents.append((package[0] if len(package) > 1 else "", doc))
    return documents


def build_corpus(root: str, documents: list[tuple[str, str]]) -> str:
    """Writes corpus/a_train.txt and corpus/b_heldout.txt (one paragraph per line, every 20th document
    held out); returns the corpus folder."""
    corpus = os.path.join(root, "corpus")
    train_path, heldout_path = os.path.join(corpus, "a_train.txt"), os.path.join(corpus, "b_heldout.txt")
    if not (os.path.exists(train_path) and os.path.exists(heldout_path)):
        if not documents:
            raise RuntimeError("no CPython documentation found (pydoc_data and the stdlib sources are missing)")
        os.makedirs(corpus, exist_ok=True)
        train, heldout = [], []
        for i, (_, document) in enumerate(documents):
            (heldout if i % 20 == 0 else train).extend(_paragraphs(document))
        seen = set(train)  # reference topics repeat some paragraphs: keep the held-out text unseen
        heldout = [p for p in heldout if p not in seen]
        for path, paragraphs in ((train_path, train), (heldout_path, heldout)):
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write("\n".join(paragraphs) + "\n")
            os.replace(path + ".tmp", path)
    return corpus


def build_package_task(documents: list[tuple[str, str]], folder: str, packages: int = 6) -> tuple[int, int, list]:
    """A classification task in `folder` (train.tsv / dev.tsv, `text<TAB>label`): which standard-library
    package a docstring documents, over the `packages` packages with the most docstrings; every 5th
    docstring is in dev. The input is the docstring's first paragraph."""
    if not os.path.exists(os.path.join(folder, "dev.tsv")):
        counts = {}
        for source, _ in documents:
            if source not in ("", "reference"):
                counts[source] = counts.get(source, 0) + 1
        chosen = sorted(sorted(counts, key=lambda p: (-counts[p], p))[:packages])
        rows = [(" ".join(text.split("\n\n")[0].split()), source) for source, text in documents if source in chosen]
        rows = [(text.replace("\t", " "), source) for text, source in rows if len(text.split()) >= 5]
        os.makedirs(folder, exist_ok=True)
        for name, part in (("train.tsv", [r for i, r in enumerate(rows) if i % 5]),
                           ("dev.tsv", [r for i, r in enumerate(rows) if i % 5 == 0])):
            with open(os.path.join(folder, name) + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(f"{text}\t{label}\n" for text, label in part)
            os.replace(os.path.join(folder, name) + ".tmp", os.path.join(folder, name))
    from tasks.classification import labels_of, read_split
    return len(read_split(folder, "train")), len(read_split(folder, "validation")), list(labels_of(folder))


def _finished(workdir: str, steps: int) -> bool:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return any(r.get("step") == steps and "eval/ground_truth" in r for r in rows)


def _done(workdir: str, config) -> bool:
    finished = _finished(workdir, config.train.steps)
    return finished and (config.mode != "finetune" or os.path.exists(os.path.join(workdir, "results.json")))


def _stage(name: str, workdir: str, config, log) -> None:
    """Runs one stage in this process, unless its workdir holds it finished.

    Raises:
      SystemExit: the run returned before its last step: SIGINT (Ctrl-C) or SIGTERM stops a run after
        checkpointing the current step, and the next stages must not start from an unfinished model.
    """
    from miniend_jax.modes import run
    start = time.time()
    if _done(workdir, config):
        log(f"[{name}] already done in {workdir}")
        return
    log(f"[{name}] {config.mode} for {config.train.steps} steps -> {workdir}")
    run(config, workdir)
    if not _done(workdir, config):
        raise SystemExit(f"[{name}] stopped before its {config.train.steps} steps (checkpoint written); "
                         "run `make demo` again: it resumes there.")
    log(f"[{name}] {time.time() - start:.0f} s")


def _heldout_loss(workdir: str) -> float:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if "eval/ground_truth" in r][-1]["eval/ground_truth"]


ROWS = ("teacher", "miniend_e", "scratch", "random_init")
ROW_NAMES = {"teacher": "teacher (pretrained, 3+3 x 128)", "miniend_e": "student, MiniEnD-E (2+2 x 64)",
             "scratch": "student, from scratch (2+2 x 64)", "random_init": "student, random init (2+2 x 64)"}


def _difference(a: dict, b: dict, metric: str) -> str:
    from miniend_jax.evaluation.stats import paired_difference
    d = paired_difference({s: r[metric] for s, r in a.items()}, {s: r[metric] for s, r in b.items()})
    verdict = "significant" if d.significant else "within noise"
    return f"{d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}] {verdict}"


def results_table(scores: dict, forward: dict, heldout: dict) -> str:
    """The demo's markdown table: per row the forward GFLOPs per example, held-out loss, package accuracy
    and macro-F1 as mean ± std over finetuning seeds, and the paired accuracy difference to the random-init
    row and (for the students) to the scratch row with its 95% interval, marked significant or within
    noise.

    Args:
      scores: {row: {seed: {"accuracy": float, "f1_macro": float}}} in percent.
      forward: {row: forward FLOPs per example}. heldout: {row: held-out loss as text} (rows without one
        show "-").
    """
    from miniend_jax.evaluation.stats import summarize
    n = len(next(iter(scores.values())))
    lines = [f"| model | forward GFLOPs / example | held-out span-corruption loss | package accuracy ({n} seeds) | "
             "package macro-F1 | accuracy - random init (95% CI) | accuracy - scratch (95% CI) |",
             "|---|---:|---:|---:|---:|---|---|"]
    for row in scores:
        cells = []
        for metric in ("accuracy", "f1_macro"):
            summary = summarize([r[metric] for r in scores[row].values()])
            cells.append(f"{summary.mean:.1f} ± {summary.std:.1f}")
        vs_random = _difference(scores[row], scores["random_init"], "accuracy") if row != "random_init" else ""
        vs_scratch = (_difference(scores[row], scores["scratch"], "accuracy")
                      if row in ("miniend_e", "random_init") else "")
        lines.append(f"| {ROW_NAMES[row]} | {forward[row] / 1e9:.3f} | {heldout.get(row, '-')} | {cells[0]} | "
                     f"{cells[1]} | {vs_random} | {vs_scratch} |")
    return "\n".join(lines)


def main() -> int:
    os.chdir(ROOT_DIR)
    sys.path.insert(0, ROOT_DIR)
    from miniend_jax.console import quiet_console
    quiet_console()
    from configs import demo as demo_configs
    from miniend_jax.checkpoints.tokenizer import train_sentencepiece
    from miniend_jax.models.presets import get_preset
    from miniend_jax.plot import plot
    from miniend_jax.train import flops
    from tasks.pretraining import task_feature_lengths

    start = time.time()
    log = lambda message: print(f"demo {time.time() - start:6.0f}s | {message}", flush=True)
    root = demo_configs.ROOT
    documents = documentation_texts()
    corpus = build_corpus(root, documents)
    sizes = {n: os.path.getsize(os.path.join(corpus, n)) for n in sorted(os.listdir(corpus))}
    log(f"corpus: CPython documentation, {sizes} bytes")
    train_sentencepiece(os.path.join(corpus, "a_train.txt"), demo_configs.VOCAB, demo_configs.SPM_PIECES)
    log(f"vocabulary: {demo_configs.VOCAB} ({demo_configs.SPM_PIECES} pieces + 100 sentinels)")
    n_train, n_dev, labels = build_package_task(documents, demo_configs.TASK_DIR)
    log(f"downstream task: which package a docstring documents ({', '.join(labels)}), "
        f"{n_train} train / {n_dev} dev")

    workdirs = {"teacher": f"{root}/teacher", "miniend_e": f"{root}/miniend_e", "scratch": f"{root}/scratch"}
    for stage in ("teacher", "miniend_e", "scratch"):
        _stage(stage, workdirs[stage], demo_configs.get_config(stage), log)
    # Every model finetuned with the same seeds (data order); random init draws its initialisation from
    # the seed too. Rows are compared seed by seed (paired differences).
    scores = {stage: {} for stage in ROWS}
    for stage in ROWS:
        for seed in demo_configs.FINETUNE_SEEDS:
            config = demo_configs.get_config("finetune_random_init" if stage == "random_init" else "finetune")
            config.seed = seed
            if stage in workdirs:
                config.model.path = workdirs[stage]
            target = f"{root}/ft_{stage}_s{seed}"
            _stage(f"finetune {stage}, seed {seed}", target, config, log)
            with open(os.path.join(target, "results.json")) as f:
                scores[stage][seed] = json.load(f)["results"][demo_configs.TASK]

    teacher_config = get_preset("t5-v1_1-small", **demo_configs.TEACHER)
    student_config = get_preset("t5-v1_1-small", **demo_configs.STUDENT)
    lengths = task_feature_lengths(demo_configs.get_config("teacher").data.inputs_length)
    student_flops = flops.forward_flops(student_config, 1, lengths["inputs"], lengths["targets"])
    forward = {stage: student_flops for stage in ROWS}
    forward["teacher"] = flops.forward_flops(teacher_config, 1, lengths["inputs"], lengths["targets"])
    heldout = {stage: f"{_heldout_loss(workdir):.3f}" for stage, workdir in workdirs.items()}
    table = results_table(scores, forward, heldout)
    plot([workdirs["teacher"], workdirs["miniend_e"], workdirs["scratch"]], ["eval/ground_truth"],
         f"{root}/curves.png", title="Held-out span-corruption loss, CPython docs")
    with open(f"{root}/results.md", "w") as f:
        f.write(table + "\n")
    print("\n" + table + "\n", flush=True)
    log(f"done: table in {root}/results.md, loss curves in {root}/curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
