"""The paper's comparison in miniature, end to end and resumable (configs/experiments/, docs/results.md).

  python -m miniend_jax.experiment [--workdir=workdirs/experiment] [--docs=docs]

First the inputs: a SentencePiece vocabulary trained on the Wikipedia training shards and a 2,000-sentence
SST-2 training subset (`prepare`). Then stages, each a `python -m miniend_jax.main` run in its own directory
under --workdir:
1. `teacher`: pretrained from scratch on span corruption (configs/experiments/teacher.py);
2. one student per row of ROWS, distilled from that teacher (or pretrained from scratch), same steps and batch;
3. every model (the teacher, and the student's shape from random weights, too) finetuned on each task of
   configs/experiments/common.py:DOWNSTREAM with each of its seeds, and scored on the full dev set;
4. the report: results.json (every seed's scores, mean, std, the paired difference to the from-scratch
   student with its 95% interval) in --workdir and --docs, results.md (the tables) in --workdir, and the
   figures in --docs.
A finished stage leaves `done.json` and is skipped on the next call; an interrupted one resumes from its
newest checkpoint. Every attempt's wall time is appended to `times.jsonl`; a stage's time is their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from miniend_jax.jsonl import append_jsonl, read_jsonl

# Student rows: (workdir name, label in the table). Each has configs/experiments/<name>.py.
ROWS = (
    ("scratch", "from scratch"),
    ("mlmkd", "MlmKD"),
    ("minilm", "MiniLM"),
    ("mlmkd_minilm", "MlmKD + MiniLM"),
    ("l_imp", "L_Imp"),
    ("miniend_d", "MiniEnD-D"),
    ("miniend_d_no_logits", "MiniEnD-D, no logits"),
    ("miniend_e", "MiniEnD-E"),
    ("miniend_e_no_logits", "MiniEnD-E, no logits"),
    ("miniend_e_interp", "MiniEnD-E, interpolated"),
)
RANDOM_INIT = ("random_init", "random init (no pretraining)")
MODELS = (("teacher", "teacher"), RANDOM_INIT) + ROWS
CONFIGS = "configs/experiments"
# The score each downstream task is compared on: (seqio Task, metric, value of an undefined score).
# A constant prediction has no correlation (NaN): on STS-B it counts as 0, no skill.
MAIN_METRIC = {"sst2_2k": ("glue_sst2", "accuracy", None), "stsb": ("glue_stsb", "spearman_corrcoef", 0.0),
               "mrpc": ("glue_mrpc", "f1", None), "rte": ("glue_rte", "accuracy", None),
               "cola": ("glue_cola", "matthews_corrcoef", None)}
# The stability figure: encoder and decoder gradient norms of these rows.
STABILITY_ROWS = ("l_imp", "miniend_d", "miniend_e")


def _common():
    import importlib
    return importlib.import_module("configs.experiments.common")


def downstream_stages(root: str, model: str, seeds=None, tasks=None) -> list[tuple[str, list[str]]]:
    """The finetuning stages of `model` (a name of MODELS): each of `tasks` (default: every task of
    DOWNSTREAM), for each of `seeds` (default: every seed of FINETUNE_SEEDS)."""
    common = _common()
    source = (["--config.model.source=preset"] if model == RANDOM_INIT[0]
              else [f"--config.model.path={root}/{model}"])
    out = []
    for seed in common.FINETUNE_SEEDS if seeds is None else seeds:
        for task in common.DOWNSTREAM if tasks is None else tasks:
            glue_dir = ([f"--config.tasks.glue_dir={root}/data/glue_sst2_2k"]
                        if common.DOWNSTREAM[task][1] == common.SUBSET_GLUE_DIR else [])
            out.append((f"downstream/{model}/{task}_s{seed}",
                        [f"--config={CONFIGS}/finetune.py:{task}", f"--config.seed={seed}",
                         f"--config.data.vocab={root}/spm8k.model", *glue_dir, *source]))
    return out


def stages(root: str) -> list[tuple[str, list[str]]]:
    """(stage name, `miniend_jax.main` arguments) in run order; a stage's workdir is root/<name>.

    The instrument comes first: the teacher and the from-scratch student, then the downstream runs of
    the teacher, random init and the from-scratch student task by task and seed by seed, so that the
    first task's seeds already say whether its scores can see pretraining. Then each distilled row
    followed by its downstream runs, so that an interrupted experiment holds complete rows.
    """
    vocab = f"--config.data.vocab={root}/spm8k.model"
    row_args = lambda name: [f"--config={CONFIGS}/{name}.py", f"--config.teacher.path={root}/teacher", vocab]
    out = [("teacher", [f"--config={CONFIGS}/teacher.py", vocab]), ("scratch", row_args("scratch"))]
    common = _common()
    for task in common.DOWNSTREAM:
        for seed in common.FINETUNE_SEEDS:
            for model in ("teacher", RANDOM_INIT[0], "scratch"):
                out += downstream_stages(root, model, seeds=[seed], tasks=[task])
    for name, _ in ROWS[1:]:
        out.append((name, row_args(name)))
        out += downstream_stages(root, name)
    return out


def prepare(root: str, glue_dir: str = "../shared/data/glue", wiki: str = "../shared/data/enwiki_2015_extract") -> None:
    """What the stages read besides ../shared/data: the SentencePiece vocabulary trained on the Wikipedia
    training shards (`spm8k.model`) and the 2,000-sentence SST-2 training subset (`data/glue_sst2_2k`).
    Each is written once (atomically) and reused."""
    import glob
    import gzip
    import random

    from miniend_jax.checkpoints.tokenizer import train_sentencepiece
    common = _common()
    model = os.path.join(root, "spm8k.model")
    if not os.path.exists(model):
        shards = sorted(glob.glob(os.path.join(wiki, "*", "wiki_*.gz")))[:-2]  # the last 2 are held out
        text = os.path.join(root, "spm_corpus.txt")
        with open(text + ".tmp", "w", encoding="utf-8") as out:
            for shard in shards:
                with gzip.open(shard, "rt", encoding="utf-8", errors="replace") as f:
                    out.writelines(line for line in f if len(line) > 40 and not line.startswith(("<doc", "</doc")))
        os.replace(text + ".tmp", text)
        print(f"[experiment] training the vocabulary ({common.SPM_PIECES} pieces) on {len(shards)} shards", flush=True)
        train_sentencepiece(text, model, common.SPM_PIECES, input_sentence_size=300_000)
    subset = os.path.join(root, "data", "glue_sst2_2k", "SST-2")
    if not os.path.exists(os.path.join(subset, "dev.tsv")):
        os.makedirs(subset, exist_ok=True)
        with open(os.path.join(glue_dir, "SST-2", "train.tsv"), encoding="utf-8") as f:
            header, *rows = f.readlines()
        chosen = random.Random(0).sample(rows, common.SST2_SUBSET)
        for name, lines in (("train.tsv", [header, *chosen]), ("dev.tsv", None)):
            path = os.path.join(subset, name)
            if lines is None:
                shutil.copyfile(os.path.join(glue_dir, "SST-2", "dev.tsv"), path + ".tmp")
            else:
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    f.writelines(lines)
            os.replace(path + ".tmp", path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def stage_times(root: str) -> dict[str, float]:
    """Seconds spent on each stage under `root`, summed over its attempts (`times.jsonl`)."""
    path = os.path.join(root, "times.jsonl")
    totals: dict[str, float] = {}
    if os.path.exists(path):
        for row in read_jsonl(path):
            totals[row["stage"]] = totals.get(row["stage"], 0.0) + row["seconds"]
    return totals


def reached_last_step(workdir: str) -> bool:
    """Whether the run in `workdir` finished: it checkpointed the last of its `train.steps` (from its
    resolved `config.json`) and logged that step's final evaluation (and, finetuning, wrote its results).
    A run stopped by a signal exits 0 too, after checkpointing an earlier step, or the last one when the
    signal came during the final evaluation."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
        steps, mode = config["train"]["steps"], config["mode"]
        rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    evaluated = any(r.get("step") == steps and any(k.startswith("eval/") for k in r) for r in rows)
    return (os.path.isdir(os.path.join(workdir, "checkpoints", str(steps))) and evaluated
            and (mode != "finetune" or os.path.exists(os.path.join(workdir, "results.json"))))


def _run_forwarding_signals(command: list[str], log) -> int:
    """Runs `command` to its end, passing SIGINT and SIGTERM on to it as SIGTERM (its loop then
    checkpoints the current step and exits 0) instead of letting them kill it mid-step; returns its
    exit status."""
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    forward = lambda signum, frame: process.poll() is None and process.send_signal(signal.SIGTERM)
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_stage(root: str, name: str, args: list[str]) -> None:
    """Runs `python -m miniend_jax.main *args --workdir=root/name` unless `done.json` says it finished;
    writes `done.json` only when the run exited 0 having reached its last step.

    Raises:
      SystemExit: the run failed, or stopped before its last step; the message says how to resume.
    """
    workdir = os.path.join(root, name)
    if os.path.exists(os.path.join(workdir, "done.json")):
        print(f"[experiment] {name}: done, skipped", flush=True)
        return
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    command = [sys.executable, "-m", "miniend_jax.main", *args, f"--workdir={workdir}"]
    print(f"[experiment] {name}: {' '.join(command[1:])} (log: {workdir}.log)", flush=True)
    start = time.time()
    with open(workdir + ".log", "a") as log:
        rc = _run_forwarding_signals(command, log)
    seconds = time.time() - start
    append_jsonl(os.path.join(root, "times.jsonl"), {"stage": name, "seconds": round(seconds, 1), "rc": rc})
    if rc != 0:
        with open(workdir + ".log", errors="replace") as log:
            tail = [line for line in log.read().splitlines() if line.strip()][-5:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"[experiment] {name} failed (exit {rc}); see {workdir}.log. Fix the cause and run "
                         "the same command again: finished stages are skipped, this one resumes.")
    if not reached_last_step(workdir):
        raise SystemExit(f"[experiment] {name} exited before its last step (a run stopped by SIGTERM or SIGINT "
                         f"checkpoints and exits 0; see {workdir}.log). Run the same command again: this stage "
                         "resumes from its checkpoint.")
    with open(os.path.join(workdir, "done.json"), "w") as f:
        json.dump({"command": " ".join(command[1:]), "seconds": round(seconds, 1)}, f)
    print(f"[experiment] {name}: finished in {seconds / 60:.1f} min", flush=True)


def _final_heldout(workdir: str) -> float:
    from miniend_jax.plot import read_metrics
    rows = [r for r in read_metrics(workdir) if "eval/ground_truth" in r]
    return rows[-1]["eval/ground_truth"]


def _model_shape(name: str):
    """(model config, forward FLOPs of one training example: encoder inputs_length, decoder the span-corruption
    targets) of a row, from its config file (the random-init row has the students' shape)."""
    import importlib

    from miniend_jax.build import student_config
    from miniend_jax.train.flops import forward_flops
    from tasks.lengths import lengths_for_inputs
    config = importlib.import_module(f"configs.experiments.{'scratch' if name == RANDOM_INIT[0] else name}").get_config()
    model = student_config(config)
    _, targets = lengths_for_inputs(config.data.inputs_length, config.data.noise_density,
                                    config.data.mean_noise_span_length)
    return model, forward_flops(model, 1, config.data.inputs_length, targets)


def _downstream(root: str, model: str, task: str, times: dict) -> dict:
    """Every finished seed's scores of `model` on `task`, its main metric per seed, and their time."""
    seqio_task, metric, undefined = MAIN_METRIC[task]
    scores, main_scores, seconds = {}, {}, 0.0
    for seed in _common().FINETUNE_SEEDS:
        stage = f"downstream/{model}/{task}_s{seed}"
        if not os.path.exists(os.path.join(root, stage, "done.json")):
            continue
        results = _read_json(os.path.join(root, stage, "results.json"))["results"][seqio_task]
        value = results.get(metric, float("nan"))
        scores[seed] = results
        main_scores[seed] = undefined if (value != value and undefined is not None) else value  # NaN -> no skill
        seconds += times.get(stage, 0.0)
    return {"task": seqio_task, "metric": metric, "seeds": main_scores, "all_scores": scores, "time_s": seconds}


def collect(root: str) -> dict:
    """Every model's shape, held-out loss, times and downstream scores per seed; each score's mean and
    spread over seeds and its paired difference to the from-scratch student; the instrument check.
    A model's `downstream` holds only the tasks with a finished finetuning run."""
    import jax

    from miniend_jax.evaluation.stats import paired_difference, summarize
    from miniend_jax.models.registry import abstract_params
    times = stage_times(root)
    tasks = list(_common().DOWNSTREAM)
    models = []
    for name, label in MODELS:
        model, flops = _model_shape(name)
        record = {"name": name, "label": label, "params": sum(x.size for x in jax.tree.leaves(abstract_params(model))),
                  "forward_flops": flops, "time_s": times.get(name), "heldout_loss": None, "downstream": {}}
        if os.path.exists(os.path.join(root, name, "done.json")):
            record["heldout_loss"] = _final_heldout(os.path.join(root, name))
        for task in tasks:
            entry = _downstream(root, name, task, times)
            if entry["seeds"]:
                entry.update(summarize(list(entry["seeds"].values())).as_dict())
                record["downstream"][task] = entry
        models.append(record)
    by_name = {m["name"]: m for m in models}
    for m in models:
        for task, entry in m["downstream"].items():
            scratch = by_name["scratch"]["downstream"].get(task, {"seeds": {}})["seeds"]
            try:
                entry["vs_scratch"] = paired_difference(entry["seeds"], scratch).as_dict()
            except ValueError:  # no shared finished seed yet
                entry["vs_scratch"] = None
    return {"models": models, "instrument": instrument(by_name, tasks)}


def instrument(by_name: dict, tasks: list[str]) -> dict:
    """Whether the downstream scores can see pretraining (the protocol's own check): per task, the
    teacher's and the from-scratch student's mean minus random init's, and twice the seed std pooled over
    the three rows."""
    from miniend_jax.evaluation.stats import SeedSummary, pooled_std
    out = {}
    for task in tasks:
        rows = [by_name[n]["downstream"].get(task, {}) for n in ("teacher", RANDOM_INIT[0], "scratch")]
        if any("mean" not in r for r in rows):
            out[task] = None
            continue
        teacher, random_init, scratch = rows
        summaries = [SeedSummary(tuple(r["scores"]), r["mean"], r["std"], r["n"]) for r in rows]
        try:
            pooled = pooled_std(summaries)
        except ValueError:
            pooled = float("nan")
        out[task] = {"teacher_minus_random": teacher["mean"] - random_init["mean"],
                     "scratch_minus_random": scratch["mean"] - random_init["mean"], "pooled_std": pooled}
    return out


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _cell(entry: dict) -> str:
    if "mean" not in entry:
        return "-"
    spread = "" if entry["n"] < 2 else f" ± {entry['std']:.1f}"
    return f"{entry['mean']:.1f}{spread} (n={entry['n']})"


def _difference(entry: dict) -> str:
    d = entry.get("vs_scratch")
    if not d or d["n"] < 2:
        return "-"
    return f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]{' *' if d['significant'] else ''}"


def table(collected: dict) -> str:
    """The results table (markdown): per model, held-out loss and each task's mean ± std over seeds, and
    the paired difference to the from-scratch student with its 95% interval (* where it excludes 0)."""
    tasks = list(_common().DOWNSTREAM)
    names = {t: f"{t} {MAIN_METRIC[t][1]}" for t in tasks}
    head = ("| model | params | fwd GFLOPs/example | held-out loss | "
            + " | ".join(f"{names[t]} | vs scratch" for t in tasks) + " | pretrain min | finetune min |")
    lines = [head, "|---|" + "---:|" * (5 + 2 * len(tasks))]
    for m in collected["models"]:
        finetune = sum(entry["time_s"] for entry in m["downstream"].values())
        cells = [m["label"], f"{m['params'] / 1e6:.1f}M", f"{m['forward_flops'] / 1e9:.2f}", _fmt(m["heldout_loss"], 3)]
        for t in tasks:
            entry = m["downstream"].get(t, {})
            cells += [_cell(entry), "" if m["name"] == "scratch" else _difference(entry)]
        cells += [_fmt(None if m["time_s"] is None else m["time_s"] / 60), _fmt(finetune / 60)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def instrument_lines(collected: dict) -> str:
    """The instrument check in words: the teacher 5 points above random init on two tasks, the scratch
    student more than twice the pooled seed std above it on one."""
    lines = ["| task | teacher - random init | scratch - random init | 2 x pooled seed std |", "|---|---:|---:|---:|"]
    for task, row in collected["instrument"].items():
        if row is None:
            lines.append(f"| {task} | - | - | - |")
            continue
        lines.append(f"| {task} | {row['teacher_minus_random']:+.1f} | {row['scratch_minus_random']:+.1f} | "
                     f"{2 * row['pooled_std']:.1f} |")
    return "\n".join(lines) + "\n"


def constant_prediction_row(root: str, glue_dir: str = "../shared/data/glue") -> str:
    """The table row of a model that always answers its training set's majority class: the level each
    downstream score must beat (a constant has no correlation: STS-B 0)."""
    from collections import Counter

    from tasks.glue import TASKS, read_split
    common = _common()
    cells = ["constant prediction (training majority)", "", "", ""]
    for task, (seqio_task, _, _, _) in common.DOWNSTREAM.items():
        glue_task = TASKS[seqio_task[len("glue_"):]]
        directory = os.path.join(root, "data", "glue_sst2_2k") if task == "sst2_2k" else glue_dir
        if glue_task.labels is None or not os.path.isdir(directory):
            cells += ["0.0" if glue_task.labels is None else "-", ""]
            continue
        majority = Counter(r["label"] for r in read_split(directory, glue_task, "train")).most_common(1)[0][0]
        targets = [r["label"] for r in read_split(directory, glue_task, "validation")]
        scores = {}
        for fn in glue_task.metric_fns:
            scores.update(fn(targets, [majority] * len(targets)))
        cells += [_fmt(scores[MAIN_METRIC[task][1]]), ""]
    return "| " + " | ".join(cells + ["", ""]) + " |\n"


def figures(root: str, out_dir: str) -> list[str]:
    """The stability figure (gradient norms of L_Imp against MiniEnD-D/E) and the held-out loss curves."""
    from miniend_jax.plot import plot
    done = lambda name: os.path.exists(os.path.join(root, name, "done.json"))
    written = []
    stability = [os.path.join(root, n) for n in STABILITY_ROWS if done(n)]
    if stability:
        path = os.path.join(out_dir, "results_grad_norms.png")
        plot(stability, ["grad_norm/encoder", "grad_norm/decoder"], path,
             title="student gradient norms (before clipping)")
        written.append(path)
    students = [os.path.join(root, n) for n, _ in ROWS if done(n)]
    if students:
        path = os.path.join(out_dir, "results_heldout.png")
        # The rows that never train the output head stay near 10.8; the second panel shows the others.
        losses = [_final_heldout(w) for w in students]
        low = [x for x in losses if x < 9.0] or losses
        zoom = (min(low) - 0.05, max(low) + 0.25)
        plot(students, ["eval/ground_truth", "eval/ground_truth"], path, ylims=[None, zoom],
             title="held-out span-corruption loss of the students")
        written.append(path)
    return written


def report(root: str, docs_dir: str) -> None:
    """Writes results.json (`collect`) and results.md (the tables) in `root`, and results.json and the
    figures in `docs_dir` (docs/: what is committed)."""
    collected = collect(root)
    os.makedirs(docs_dir, exist_ok=True)
    for directory in (root, docs_dir):
        with open(os.path.join(directory, "results.json"), "w") as f:
            json.dump(collected, f, indent=2)
    text = table(collected) + constant_prediction_row(root) + "\n" + instrument_lines(collected)
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(text)
    print(text)
    for path in [os.path.join(docs_dir, "results.json"), *figures(root, docs_dir)]:
        print(f"[experiment] wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workdirs/experiment")
    parser.add_argument("--docs", default="docs", help="where results.json and the PNG figures go")
    parser.add_argument("--report_only", action="store_true", help="write the table and figures of what is done")
    args = parser.parse_args(argv)
    root = args.workdir.rstrip("/")
    from miniend_jax import files
    for flag, path in (("--workdir", root), ("--docs", args.docs)):
        if files.is_cloud(path):  # its stages' logs, data and compilation cache are this machine's
            raise SystemExit(f"[experiment] {flag}={path}: the experiment runs its stages on this machine; give a "
                             "local folder (and copy it to a bucket afterwards: gcloud storage cp -r FOLDER gs://...).")
    if not os.path.isdir(CONFIGS):
        raise SystemExit(f"[experiment] no {CONFIGS}/ here: run from the repository root.")
    os.makedirs(root, exist_ok=True)
    # Students of one shape compile the same finetuning steps: keep compiled programs across stages.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(os.path.join(root, "jax_cache")))
    if not args.report_only:
        prepare(root)
        for name, stage_args in stages(root):
            run_stage(root, name, stage_args)
    report(root, args.docs)


if __name__ == "__main__":
    main()
