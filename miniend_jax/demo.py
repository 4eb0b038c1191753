"""`make demo`: the whole MiniEnD story at toy scale, offline, on 2 CPU cores in about 8 minutes.

1. Downstream task first: which of the 12 largest standard-library modules and packages (asyncio, email,
   tkinter, ...) a docstring documents, from the first paragraph of every docstring of 8 words or more;
   every 3rd of a module's docstrings in dev (about 1,370 train / 690 dev, majority class 23.5%).
2. Corpus: CPython's own documentation, which every Python installation carries (the language reference
   topics of `pydoc_data` and the standard library's docstrings, leaving out those of the task's dev
   set), split into training text and held-out text (every 20th document).
3. A SentencePiece vocabulary (2,000 pieces, plus T5's 100 sentinels) trained on the training text.
4. A teacher (T5 v1.1 shape, 3+3 layers, width 128) pretrained by span corruption with relative steps.
5. Two students of one shape (2+2 layers, width 64, about 1/5 of the teacher's forward FLOPs), trained for
   the same steps and batch: MiniEnD-E distilled from the teacher, and from scratch.
6. Held-out span-corruption loss of the three, and the downstream score: each model, and the student's
   shape with no pretraining at all (random init), finetuned with five seeds by one recipe (AdamW 3e-4,
   constant, 300 steps of 16), scored by decoding the whole dev set (accuracy, macro-F1).
7. A table on the console and in workdirs/demo/results.md: scores as mean ± std over the seeds, and each
   row's accuracy minus the random-init and the scratch rows' (paired by seed, 95% t interval), marked
   significant or within noise; below it, what pretraining moved in each model (`miniend_jax.diagnose`:
   each parameter group's movement from its initialisation, the encoder's attention entropy); the loss
   curves in workdirs/demo/curves.png.

Two runs go at a time (`configs/demo.py:WORKERS`), each logging to `<its workdir>/log.txt`. Stages that
already finished are reused, so a second `make demo` only prints the results. The same pipeline on a
real corpus, a real teacher and a pod: see README.md.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import json
import os
import re
import signal
import sys
import sysconfig
import time
from typing import Any, Callable

from miniend_jax.plot import read_metrics

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 8]


def _first_paragraph(docstring: str) -> str:
    return " ".join(docstring.split("\n\n")[0].split()).replace("\t", " ")


def stdlib_docstrings() -> list[tuple[str, str]]:
    """Every docstring of CPython's standard library as (module, docstring), `module` the top-level module
    or package it belongs to (`json`, `email`, `tkinter`), in file order; tests, idlelib and
    site-packages left out. The same on every machine with the same Python."""
    stdlib = sysconfig.get_paths()["stdlib"]
    found = []
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        parts = os.path.relpath(path, stdlib).split(os.sep)
        if parts[0].startswith("test") or {"test", "tests", "idlelib", "site-packages"} & set(parts):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = parts[0] if len(parts) > 1 else parts[0][:-len(".py")]
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    found.append((module, doc))
    return found


def documentation_texts(docstrings: list[tuple[str, str]], exclude: set[str] = frozenset()) -> list[tuple[str, str]]:
    """CPython's prose documentation as (source, text), sorted: pydoc's reference topics (source
    "reference") and the docstrings longer than 200 characters (source: their module), leaving out those
    whose first paragraph is in `exclude` (the downstream task's dev set, so that no model pretrains on
    the text it is scored on)."""
    import pydoc_data.topics
    documents = [("reference", pydoc_data.topics.topics[k]) for k in sorted(pydoc_data.topics.topics)]
    return documents + [(module, doc) for module, doc in docstrings
                        if len(doc) > 200 and _first_paragraph(doc) not in exclude]


def build_corpus(root: str, documents: list[tuple[str, str]], exclude: set[str] = frozenset()) -> str:
    """Writes corpus/a_train.txt and corpus/b_heldout.txt (one paragraph per line, every 20th document
    held out, no paragraph of `exclude`); returns the corpus folder."""
    corpus = os.path.join(root, "corpus")
    train_path, heldout_path = os.path.join(corpus, "a_train.txt"), os.path.join(corpus, "b_heldout.txt")
    if not (os.path.exists(train_path) and os.path.exists(heldout_path)):
        if not documents:
            raise RuntimeError("no CPython documentation found (pydoc_data and the stdlib sources are missing)")
        os.makedirs(corpus, exist_ok=True)
        train, heldout = [], []
        for i, (_, document) in enumerate(documents):
            (heldout if i % 20 == 0 else train).extend(p for p in _paragraphs(document) if p not in exclude)
        seen = set(train)  # reference topics repeat some paragraphs: keep the held-out text unseen
        heldout = [p for p in heldout if p not in seen]
        for path, paragraphs in ((train_path, train), (heldout_path, heldout)):
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write("\n".join(paragraphs) + "\n")
            os.replace(path + ".tmp", path)
    return corpus


def module_task_rows(docstrings: list[tuple[str, str]], modules: int, dev_every: int
                     ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The downstream task's (train, dev) rows `(text, module)`: which standard-library module or package a
    docstring documents, over the `modules` with the most docstrings; the input is the docstring's first
    paragraph (8 words or more, each text once), every `dev_every`-th of a module's docstrings in dev."""
    by_module, seen = {}, set()
    for module, doc in docstrings:
        text = _first_paragraph(doc)
        if len(text.split()) >= 8 and text not in seen:
            seen.add(text)
            by_module.setdefault(module, []).append(text)
    chosen = sorted(sorted(by_module, key=lambda m: (-len(by_module[m]), m))[:modules])
    train, dev = [], []
    for module in chosen:
        for i, text in enumerate(by_module[module]):
            (dev if i % dev_every == 0 else train).append((text, module))
    return train, dev


def write_task(folder: str, train: list[tuple[str, str]], dev: list[tuple[str, str]]) -> tuple[int, int, list]:
    """Writes `folder`/train.tsv and dev.tsv (`text<TAB>label`) unless dev.tsv exists; returns the sizes of
    the two splits as the Task reads them and the labels."""
    if not os.path.exists(os.path.join(folder, "dev.tsv")):
        os.makedirs(folder, exist_ok=True)
        for name, part in (("train.tsv", train), ("dev.tsv", dev)):
            with open(os.path.join(folder, name) + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(f"{text}\t{label}\n" for text, label in part)
            os.replace(os.path.join(folder, name) + ".tmp", os.path.join(folder, name))
    from tasks.classification import labels_of, read_split
    return len(read_split(folder, "train")), len(read_split(folder, "validation")), list(labels_of(folder))


def _finished(workdir: str, steps: int) -> bool:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return False
    return any(r.get("step") == steps and "eval/ground_truth" in r for r in read_metrics(workdir))


def _done(workdir: str, config) -> bool:
    finished = _finished(workdir, config.train.steps)
    return finished and (config.mode != "finetune" or os.path.exists(os.path.join(workdir, "results.json")))


@dataclasses.dataclass
class Stage:
    """One run of the demo: `config` in `workdir`, once the stages named in `after` have finished."""

    name: str
    workdir: str
    config: Any
    after: tuple[str, ...] = ()


def _start_worker(root_dir: str) -> None:
    os.chdir(root_dir)
    sys.path.insert(0, root_dir)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo's process stops the workers' runs (SIGTERM)
    from miniend_jax.console import quiet_console
    quiet_console()


def _run_logged(workdir: str, config) -> bool:
    """In a worker process: runs `config` with the console going to `<workdir>/log.txt`; whether the run
    reached its last step (SIGTERM stops a run after checkpointing)."""
    from miniend_jax.modes import run
    os.makedirs(workdir, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.path.join(workdir, "log.txt"), "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            run(config, workdir)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    return _done(workdir, config)


def run_stages(stages: list[Stage], workers: int, log, runner: Callable = _run_logged) -> None:
    """Runs every stage not already done in its workdir, `workers` at a time in worker processes, each as
    soon as the stages it comes after have finished (else in list order). The students' runs keep about one
    core busy, so two at a time use both (the whole demo: 11 min 20 s against 14 min 39 s one at a time,
    measured on one machine). Each run's console goes to `<workdir>/log.txt`; the demo logs one line per
    finished stage. A failed run stops the others (after they checkpoint) before its error is raised.

    Raises:
      SystemExit: a run stopped before its last step (SIGINT or SIGTERM to the demo stops every running
        stage after it checkpoints): the stages after it must not start from an unfinished model.
      RuntimeError: a run failed; the message ends with its log's end.

    `runner(workdir, config) -> bool` (whether the run reached its last step) runs in the workers; it
    must be importable by name (a module-level function).
    """
    import concurrent.futures
    import multiprocessing
    pending = [s for s in stages if not _done(s.workdir, s.config)]
    finished = {s.name for s in stages} - {s.name for s in pending}
    for stage in stages:
        if stage.name in finished:
            log(f"[{stage.name}] already done in {stage.workdir}")
    running: dict = {}
    stop = []
    executor = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(ROOT_DIR,))

    def interrupt(signum, frame):
        stop.append(signum)
        for process in list(getattr(executor, "_processes", {}).values()):
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            ready = [s for s in pending if set(s.after) <= finished]
            while ready and len(running) < workers and not stop:
                stage = ready.pop(0)
                pending.remove(stage)
                log(f"[{stage.name}] {stage.config.mode} for {stage.config.train.steps} steps -> {stage.workdir}")
                running[executor.submit(runner, stage.workdir, stage.config)] = (stage, time.time())
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                stage, start = running.pop(future)
                if future.exception() is not None:
                    interrupt(None, None)
                    tail = _log_tail(stage.workdir)
                    raise RuntimeError(f"[{stage.name}] failed; the end of {stage.workdir}/log.txt:\n{tail}") \
                        from future.exception()
                if not future.result():
                    stop.append(stage.name)
                    continue
                finished.add(stage.name)
                log(f"[{stage.name}] {time.time() - start:.0f} s")
        if stop or pending:
            raise SystemExit("the demo stopped before every stage finished (checkpoints written); run `make demo` "
                             "again: it resumes there.")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        executor.shutdown(wait=True, cancel_futures=True)


def _log_tail(workdir: str, lines: int = 30) -> str:
    try:
        with open(os.path.join(workdir, "log.txt"), encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def _heldout_loss(workdir: str) -> float:
    return [r for r in read_metrics(workdir) if "eval/ground_truth" in r][-1]["eval/ground_truth"]


ROWS = ("teacher", "miniend_e", "scratch", "random_init")
ROW_NAMES = {"teacher": "teacher (pretrained, 3+3 x 128)", "miniend_e": "student, MiniEnD-E (2+2 x 64)",
             "scratch": "student, from scratch (2+2 x 64)", "random_init": "student, random init (2+2 x 64)"}


def _difference(a: dict, b: dict, metric: str) -> str:
    from miniend_jax.evaluation.stats import paired_difference
    d = paired_difference({s: r[metric] for s, r in a.items()}, {s: r[metric] for s, r in b.items()})
    verdict = "significant" if d.significant else "within noise"
    return f"{d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}] {verdict}"


def results_table(scores: dict, forward: dict, heldout: dict) -> str:
    """The demo's markdown table: per row the forward GFLOPs per example, held-out loss, module accuracy
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
    lines = [f"| model | forward GFLOPs / example | held-out span-corruption loss | module accuracy ({n} seeds) | "
             "module macro-F1 | accuracy - random init (95% CI) | accuracy - scratch (95% CI) |",
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


def movement_table(workdirs: dict) -> str:
    """What pretraining changed in each pretrained model (`miniend_jax.diagnose`): each parameter group's
    movement from its initialisation and the encoder's attention entropy before and after, on 64 lines of
    the held-out corpus."""
    from miniend_jax.diagnose import diagnose
    groups = ("embedding", "query", "key", "value", "out", "ffn")
    lines = ["| model | " + " | ".join(f"{g} moved" for g in groups) + " | encoder attention entropy, init -> "
             "trained (uniform) |", "|---|" + "---:|" * (len(groups) + 1)]
    for row, workdir in workdirs.items():
        report = diagnose(workdir)
        entropy = report["attention_entropy"]
        cells = [f"{report['movement'][g]:.3f}" for g in groups]
        cells.append(f"{entropy['initial']['encoder_self']['entropy']:.2f} -> "
                     f"{entropy['trained']['encoder_self']['entropy']:.2f} ({entropy['initial']['encoder_self']['uniform']:.2f})")
        lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(__doc__.strip())
        return 0
    os.chdir(ROOT_DIR)
    sys.path.insert(0, ROOT_DIR)
    from miniend_jax.console import quiet_console
    quiet_console()
    from configs import demo as demo_configs
    from miniend_jax.checkpoints.tokenizer import train_sentencepiece
    from miniend_jax.models.registry import get_preset
    from miniend_jax.plot import plot
    from miniend_jax.train import flops
    from tasks.pretraining import task_feature_lengths

    start = time.time()
    log = lambda message: print(f"demo {time.time() - start:6.0f}s | {message}", flush=True)
    root = demo_configs.ROOT
    docstrings = stdlib_docstrings()
    task_train, task_dev = module_task_rows(docstrings, demo_configs.TASK_MODULES, demo_configs.TASK_DEV_EVERY)
    dev_texts = {text for text, _ in task_dev}
    corpus = build_corpus(root, documentation_texts(docstrings, exclude=dev_texts), exclude=dev_texts)
    sizes = {n: os.path.getsize(os.path.join(corpus, n)) for n in sorted(os.listdir(corpus))}
    log(f"corpus: CPython documentation, {sizes} bytes")
    train_sentencepiece(os.path.join(corpus, "a_train.txt"), demo_configs.VOCAB, demo_configs.SPM_PIECES)
    log(f"vocabulary: {demo_configs.VOCAB} ({demo_configs.SPM_PIECES} pieces + 100 sentinels)")
    n_train, n_dev, labels = write_task(demo_configs.TASK_DIR, task_train, task_dev)
    majority = max(sum(label == name for _, label in task_dev) for name in labels) / len(task_dev)
    log(f"downstream task: which module a docstring documents ({', '.join(labels)}), "
        f"{n_train} train / {n_dev} dev (majority class {100 * majority:.1f}%)")

    workdirs = {"teacher": f"{root}/teacher", "miniend_e": f"{root}/miniend_e", "scratch": f"{root}/scratch"}
    # The critical path first: the teacher, then what needs it; the runs that need no teacher fill the other
    # worker meanwhile. Every model is finetuned with the same seeds (data order); random init draws its
    # initialisation from the seed too. Rows are compared seed by seed (paired differences).
    stages = [Stage("teacher", workdirs["teacher"], demo_configs.get_config("teacher")),
              Stage("scratch", workdirs["scratch"], demo_configs.get_config("scratch")),
              Stage("miniend_e", workdirs["miniend_e"], demo_configs.get_config("miniend_e"), after=("teacher",))]
    finetunes = {}
    for row in ("miniend_e", "teacher", "scratch", "random_init"):
        for seed in demo_configs.FINETUNE_SEEDS:
            config = demo_configs.get_config("finetune_random_init" if row == "random_init" else "finetune")
            config.seed = seed
            if row in workdirs:
                config.model.path = workdirs[row]
            finetunes[row, seed] = f"{root}/ft_{row}_s{seed}"
            stages.append(Stage(f"finetune {row}, seed {seed}", finetunes[row, seed], config,
                                after=(row,) if row in workdirs else ()))
    run_stages(stages, demo_configs.WORKERS, log)
    scores = {row: {} for row in ROWS}
    for row in ROWS:
        for seed in demo_configs.FINETUNE_SEEDS:
            with open(os.path.join(finetunes[row, seed], "results.json")) as f:
                scores[row][seed] = json.load(f)["results"][demo_configs.TASK]

    teacher_config = get_preset("t5-v1_1-small", **demo_configs.TEACHER)
    student_config = get_preset("t5-v1_1-small", **demo_configs.STUDENT)
    lengths = task_feature_lengths(demo_configs.get_config("teacher").data.inputs_length)
    student_flops = flops.forward_flops(student_config, 1, lengths["inputs"], lengths["targets"])
    forward = {stage: student_flops for stage in ROWS}
    forward["teacher"] = flops.forward_flops(teacher_config, 1, lengths["inputs"], lengths["targets"])
    heldout = {stage: f"{_heldout_loss(workdir):.3f}" for stage, workdir in workdirs.items()}
    table = results_table(scores, forward, heldout) + "\n\n" + movement_table(workdirs)
    plot([workdirs["teacher"], workdirs["miniend_e"], workdirs["scratch"]], ["eval/ground_truth"],
         f"{root}/curves.png", title="Held-out span-corruption loss, CPython docs")
    with open(f"{root}/results.md", "w") as f:
        f.write(table + "\n")
    print("\n" + table + "\n", flush=True)
    log(f"done: table in {root}/results.md, loss curves in {root}/curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
