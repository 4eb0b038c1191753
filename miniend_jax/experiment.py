"""The paper's comparison in miniature, end to end and resumable (configs/experiments/, docs/results.md).

  python -m miniend_jax.experiment [--workdir=workdirs/experiment] [--figures=docs]

Stages, each a `python -m miniend_jax.main` run in its own directory under --workdir:
1. `teacher`: pretrained from scratch on span corruption (configs/experiments/teacher.py);
2. one student per row of ROWS, distilled from that teacher (or pretrained from scratch), same steps and batch;
3. every model (the teacher too) finetuned on five GLUE tasks at equal rates and on SAMSum, and scored;
4. the report: results.json and results.md (the table) in --workdir, and the figures in --figures.
A finished stage leaves `done.json` and is skipped on the next call; an interrupted one resumes from its
newest checkpoint. Every attempt's wall time is appended to `times.jsonl`; a stage's time is their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

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
MODELS = (("teacher", "teacher"),) + ROWS
DOWNSTREAM = ("glue", "samsum")
CONFIGS = "configs/experiments"
# The stability figure: encoder and decoder gradient norms of these rows.
STABILITY_ROWS = ("l_imp", "miniend_d", "miniend_e")


def stages(root: str) -> list[tuple[str, list[str]]]:
    """(stage name, `miniend_jax.main` arguments) in run order; a stage's workdir is root/<name>."""
    out = [("teacher", [f"--config={CONFIGS}/teacher.py"])]
    for name, _ in ROWS:
        out.append((name, [f"--config={CONFIGS}/{name}.py", f"--config.teacher.path={root}/teacher"]))
    for name, _ in MODELS:
        for task in DOWNSTREAM:
            out.append((f"downstream/{name}_{task}",
                        [f"--config={CONFIGS}/finetune_{task}.py", f"--config.model.path={root}/{name}"]))
    return out


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def stage_times(root: str) -> dict[str, float]:
    """Seconds spent on each stage under `root`, summed over its attempts (`times.jsonl`)."""
    path = os.path.join(root, "times.jsonl")
    totals: dict[str, float] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                totals[row["stage"]] = totals.get(row["stage"], 0.0) + row["seconds"]
    return totals


def run_stage(root: str, name: str, args: list[str]) -> None:
    workdir = os.path.join(root, name)
    if os.path.exists(os.path.join(workdir, "done.json")):
        print(f"[experiment] {name}: done, skipped", flush=True)
        return
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    command = [sys.executable, "-m", "miniend_jax.main", *args, f"--workdir={workdir}"]
    print(f"[experiment] {name}: {' '.join(command[1:])} (log: {workdir}.log)", flush=True)
    start = time.time()
    with open(workdir + ".log", "a") as log:
        rc = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    with open(os.path.join(root, "times.jsonl"), "a") as f:
        f.write(json.dumps({"stage": name, "seconds": round(seconds, 1), "rc": rc}) + "\n")
    if rc != 0:
        with open(workdir + ".log", errors="replace") as log:
            tail = [line for line in log.read().splitlines() if line.strip()][-5:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"[experiment] {name} failed (exit {rc}); see {workdir}.log. Fix the cause and run "
                         "the same command again: finished stages are skipped, this one resumes.")
    with open(os.path.join(workdir, "done.json"), "w") as f:
        json.dump({"command": " ".join(command[1:]), "seconds": round(seconds, 1)}, f)
    print(f"[experiment] {name}: finished in {seconds / 60:.1f} min", flush=True)


def _final_heldout(workdir: str) -> float:
    from miniend_jax.plot import read_metrics
    rows = [r for r in read_metrics(workdir) if "eval/ground_truth" in r]
    return rows[-1]["eval/ground_truth"]


def _model_shape(name: str):
    """(T5Config, forward FLOPs of one training example: encoder inputs_length, decoder the span-corruption
    targets) of a row, from its config file."""
    import importlib

    from miniend_jax.build import student_config
    from miniend_jax.train.flops import forward_flops
    from tasks.lengths import lengths_for_inputs
    config = importlib.import_module(f"configs.experiments.{name}").get_config()
    model = student_config(config)
    _, targets = lengths_for_inputs(config.data.inputs_length, config.data.noise_density,
                                    config.data.mean_noise_span_length)
    return model, forward_flops(model, 1, config.data.inputs_length, targets)


def collect(root: str) -> list[dict]:
    """One record per model: shape, held-out loss, downstream scores, times (missing stages: None)."""
    import jax

    from miniend_jax.models.t5 import abstract_params
    times = stage_times(root)
    records = []
    for name, label in MODELS:
        model, flops = _model_shape(name)
        params = sum(x.size for x in jax.tree.leaves(abstract_params(model)))
        record = {"name": name, "label": label, "params": params, "forward_flops": flops,
                  "time_s": times.get(name)}
        workdir = os.path.join(root, name)
        record["heldout_loss"] = _final_heldout(workdir) if os.path.exists(os.path.join(workdir, "done.json")) else None
        for task in DOWNSTREAM:
            stage = f"downstream/{name}_{task}"
            done = os.path.exists(os.path.join(root, stage, "done.json"))
            record[task] = _read_json(os.path.join(root, stage, "results.json")) if done else None
            record[f"{task}_time_s"] = times.get(stage)
        records.append(record)
    return records


def _score(results: dict | None, task: str, metric: str) -> float | None:
    if results is None:
        return None
    return results["results"].get(task, {}).get(metric)


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(records: list[dict]) -> str:
    """The results table (markdown): every score of every model."""
    head = ("| model | params | fwd GFLOPs/example | held-out loss | CoLA MCC | SST-2 acc | MRPC F1/acc | "
            "STS-B P/S | RTE acc | GLUE (paper's score over SST-2, MRPC, STS-B, RTE) | SAMSum R-1/R-2/R-L | "
            "pretrain/distill min | finetune min |")
    lines = [head, "|---|" + "---:|" * 12]
    for r in records:
        g, s = r["glue"], r["samsum"]
        paper = None if g is None else g.get("paper_glue_score")
        finetune = [r[f"{t}_time_s"] for t in DOWNSTREAM]
        cells = [
            r["label"], f"{r['params'] / 1e6:.1f}M", f"{r['forward_flops'] / 1e9:.2f}", _fmt(r["heldout_loss"], 3),
            _fmt(_score(g, "glue_cola", "matthews_corrcoef")), _fmt(_score(g, "glue_sst2", "accuracy")),
            f"{_fmt(_score(g, 'glue_mrpc', 'f1'))} / {_fmt(_score(g, 'glue_mrpc', 'accuracy'))}",
            f"{_fmt(_score(g, 'glue_stsb', 'pearson_corrcoef'))} / {_fmt(_score(g, 'glue_stsb', 'spearman_corrcoef'))}",
            _fmt(_score(g, "glue_rte", "accuracy")), _fmt(paper),
            " / ".join(_fmt(_score(s, "summ_samsum", m)) for m in ("rouge1", "rouge2", "rougeL")),
            _fmt(None if r["time_s"] is None else r["time_s"] / 60),
            _fmt(None if None in finetune else sum(finetune) / 60),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def constant_prediction_row(glue_dir: str = "../shared/data/glue") -> str:
    """The table row of a model that always answers its training set's majority class (the chance level
    each GLUE score must beat; STS-B correlations of a constant are undefined)."""
    from collections import Counter

    from tasks.glue import TASKS, read_split
    scores = {}
    for name in ("cola", "sst2", "mrpc", "rte"):
        task = TASKS[name]
        majority = Counter(r["label"] for r in read_split(glue_dir, task, "train")).most_common(1)[0][0]
        targets = [r["label"] for r in read_split(glue_dir, task, "validation")]
        for fn in task.metric_fns:
            scores.update({f"{name}/{k}": v for k, v in fn(targets, [majority] * len(targets)).items()})
    cells = ["constant prediction (training majority)", "", "", "", _fmt(scores["cola/matthews_corrcoef"]),
             _fmt(scores["sst2/accuracy"]), f"{_fmt(scores['mrpc/f1'])} / {_fmt(scores['mrpc/accuracy'])}",
             "undefined", _fmt(scores["rte/accuracy"]), "", "", "", ""]
    return "| " + " | ".join(cells) + " |\n"


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


def report(root: str, figures_dir: str) -> None:
    records = collect(root)
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(records, f, indent=2)
    text = table(records) + constant_prediction_row()
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(text)
    print(text)
    for path in figures(root, figures_dir):
        print(f"[experiment] wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workdirs/experiment")
    parser.add_argument("--figures", default="docs", help="where the PNG figures go")
    parser.add_argument("--report_only", action="store_true", help="write the table and figures of what is done")
    args = parser.parse_args(argv)
    root = args.workdir.rstrip("/")
    if not os.path.isdir(CONFIGS):
        raise SystemExit(f"[experiment] no {CONFIGS}/ here: run from the repository root.")
    os.makedirs(root, exist_ok=True)
    # Students of one shape compile the same finetuning steps: keep compiled programs across stages.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(os.path.join(root, "jax_cache")))
    if not args.report_only:
        for name, stage_args in stages(root):
            run_stage(root, name, stage_args)
    report(root, args.figures)


if __name__ == "__main__":
    main()
