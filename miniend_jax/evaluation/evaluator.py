"""Scoring a model on seqio Tasks: jitted decoding over the mesh inside seqio's `Evaluator`, which
postprocesses the decoded text and applies each Task's metric functions; then the results as JSON and as a
markdown table, with the GLUE aggregates where GLUE tasks were scored."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from miniend_jax import files, parallel
from miniend_jax.errors import EvaluationInterrupted
from miniend_jax.evaluation import metrics
from miniend_jax.evaluation.decoding import LogitsRules, beam_search, greedy_decode


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    num_beams: int = 1               # 1: greedy
    length_penalty: float = 0.6      # beam search's alpha: T5's (t5x's default; HF's default is 1.0)
    length_penalty_rule: str = "t5"  # "t5": t5x's beam search, log-prob / ((5 + len) / 6) ** alpha;
    #                                  "hf": `generate`'s, log-prob / len ** alpha (see decoding.beam_search)
    max_length: int = 0              # generated tokens; 0: the targets length
    batch_size: int = 32
    min_length: int = 0              # generate's logits processors (decoding.LogitsRules), pipeline ids
    no_repeat_ngram_size: int = 0
    forced_bos_token_id: int = -1
    forced_eos_token_id: int = -1
    early_stopping: bool = False     # "hf" rule only

    def generation_fields(self) -> dict:
        """These settings as HF `GenerationConfig` fields (pipeline ids) for an exported model's
        `generation_config.json`, so that `generate` (and `length_penalty_rule="auto"`) decode it as it was
        scored: the processors that are on, and for the "hf" rule the beams, length penalty and early stopping
        (t5x's brevity penalty has no `generate` counterpart, so the "t5" rule writes none of those)."""
        fields = {name: value for name, value in (
            ("min_length", self.min_length), ("no_repeat_ngram_size", self.no_repeat_ngram_size),
            ("forced_bos_token_id", self.forced_bos_token_id), ("forced_eos_token_id", self.forced_eos_token_id))
            if value > 0 or (name.startswith("forced") and value >= 0)}
        if self.length_penalty_rule == "hf":
            fields.update(num_beams=self.num_beams, length_penalty=self.length_penalty,
                          early_stopping=self.early_stopping)
        return fields

    @property
    def rules(self) -> LogitsRules:
        """The logits processors these settings ask for."""
        return LogitsRules(self.min_length, self.no_repeat_ngram_size, self.forced_bos_token_id,
                           self.forced_eos_token_id)


def decode_rows(model, params, mesh, rules, inputs: np.ndarray, decode: DecodeSettings, max_length: int, *,
                return_scores: bool = False, on_batch: Callable[[int], None] | None = None):
    """Decodes `inputs` (int32 `[n, enc_len]`, 0 = padding) in batches of `decode.batch_size` rounded up to
    a multiple of the mesh's batch shards (the last batch padded with empty rows), greedy or beam search.

    Returns:
      `(tokens, scores)`: int32 `[n, max_length]` (pad id after EOS) and, with `return_scores`, float32
      `[n]` (greedy: the hypothesis's log-probability; beams: its penalised score under
      `decode.length_penalty_rule`, see `decoding.beam_search`), else None.
      `on_batch(done)` is called after each batch with the number of rows decoded so far.
    """
    import flax.linen as nn
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = -(-decode.batch_size // shards) * shards
    sharding = parallel.batch_sharding(mesh, 2)
    tokens, scores = [], []
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            batch = np.zeros((batch_size, inputs.shape[1]), np.int32)
            batch[:len(chunk)] = chunk
            batch = jax.device_put(jnp.asarray(batch), sharding)
            if decode.num_beams > 1:
                out = beam_search(model, params, batch, max_length, num_beams=decode.num_beams,
                                  length_penalty=decode.length_penalty,
                                  length_penalty_rule=decode.length_penalty_rule,
                                  early_stopping=decode.early_stopping, return_scores=return_scores,
                                  rules=decode.rules)
            else:
                out = greedy_decode(model, params, batch, max_length, return_scores=return_scores, rules=decode.rules)
            decoded, score = out if return_scores else (out, None)
            tokens.append(_on_host(decoded)[:len(chunk)])
            if return_scores:
                scores.append(_on_host(score)[:len(chunk)])
            if on_batch is not None:
                on_batch(start + len(chunk))
    empty = np.zeros((0, max_length), np.int32)
    return (np.concatenate(tokens) if tokens else empty,
            (np.concatenate(scores) if scores else np.zeros((0,), np.float32)) if return_scores else None)


def _on_host(array) -> np.ndarray:
    """The whole of a batch-sharded output on this host: with several processes, each holds only its
    devices' rows, so the rows are gathered from all of them (a collective: every process calls it)."""
    if getattr(array, "is_fully_addressable", True):
        return np.asarray(jax.device_get(array))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


class TaskEvaluator:
    """Decodes the `split` of each Task with `model` and returns `{task: {metric: value}}`."""

    def __init__(self, task_names: Sequence[str], split: str, model, mesh, rules, *, inputs_length: int,
                 targets_length: int, decode: DecodeSettings, num_examples: int | None = None,
                 log_dir: str | None = None):
        """`log_dir` (t5x: `<workdir>/inference_eval`): where seqio's loggers write, from process 0, for
        every Task and step `<task>-<step:06>.jsonl` (each example's input, target and prediction),
        `<task>-metrics.jsonl`, and the scores as TensorBoard summaries under `<task>/`. None: no log.
        seqio writes with `tf.io.gfile`, so a `log_dir` on object storage is written to a local mirror of it
        (`files.LocalMirror`: seqio's metrics files keep their earlier rows) pushed after each evaluation."""
        import seqio
        self.model, self.mesh, self.rules, self.decode = model, mesh, rules, decode
        self.max_length = decode.max_length or targets_length
        lengths = {"inputs": inputs_length, "targets": targets_length}
        log = log_dir is not None and jax.process_index() == 0
        log_dir = files.absolute(log_dir) if log_dir is not None else None
        self._log_mirror = None  # a cloud log_dir: seqio writes (and appends to) a local copy of it
        if log and files.is_cloud(log_dir):
            self._log_mirror = files.LocalMirror(log_dir)
            log_dir = self._log_mirror.path
        if log:
            os.makedirs(log_dir, exist_ok=True)  # seqio's loggers write into it, creating nothing
        self.evaluators = [
            seqio.Evaluator(name, seqio.EncDecFeatureConverter(pack=False), eval_split=split,
                            sequence_length=lengths, num_examples=num_examples or None,
                            logger_cls=(seqio.JSONLogger, seqio.TensorBoardLogger) if log else (),
                            log_dir=log_dir if log else None, use_memory_cache=True)
            for name in task_names]
        for name in task_names if jax.process_index() == 0 else ():
            cut, total, longest = cut_inputs(name, split, inputs_length, num_examples)
            if cut:
                print(f"eval: {cut} of {total} inputs of {name} {split} are longer than tasks.inputs_length="
                      f"{inputs_length} tokens (with EOS; the longest {longest}) and are cut to it: the model reads "
                      "only their beginning; raise tasks.inputs_length to score them whole", flush=True)

    def _predict(self, params, dataset, should_stop=None) -> list[tuple[int, np.ndarray]]:
        """seqio's `predict_fn`: (index, generated tokens) of every example of an enumerated dataset."""
        examples = [(int(i), np.asarray(x["encoder_input_tokens"])) for i, x in dataset.as_numpy_iterator()]
        if not examples:
            return []
        on_batch = None
        if should_stop is not None:
            def on_batch(done: int) -> None:
                if should_stop():
                    raise EvaluationInterrupted(done, len(examples), "examples decoded")
        tokens, _ = decode_rows(self.model, params, self.mesh, self.rules, np.stack([x for _, x in examples]),
                                self.decode, self.max_length, on_batch=on_batch)
        return [(index, row) for (index, _), row in zip(examples, tokens)]

    def evaluate(self, params, step: int | None = None, should_stop=None) -> dict:
        """`{task: {metric: value}}` of every Task.

        `should_stop()`, asked after each decoded batch (on every process alike: it may be a collective),
        stops the evaluation by raising `EvaluationInterrupted` when it returns True.
        """
        results = {}
        for evaluator in self.evaluators:
            future, _ = evaluator.evaluate(compute_metrics=True, step=step,
                                           predict_fn=lambda ds: self._predict(params, ds, should_stop))
            for task, scores in future.result().items():
                results[task] = {name: float(getattr(value, "value", value)) for name, value in scores.items()}
        if self._log_mirror is not None:
            self._log_mirror.push()
        return results


def cut_inputs(name: str, split: str, inputs_length: int, num_examples: int | None = None) -> tuple[int, int, int]:
    """`(cut, examples, longest)`: how many of the first `num_examples` (all: None or 0) inputs of the Task
    (or of each Task of the Mixture that has `split`, as seqio's Evaluator scores them) `name` in `split`
    are longer than `inputs_length` tokens with EOS, which seqio cuts to it (`append_eos_after_trim`), out
    of how many, and the longest length: the Tasks' own pipelines read without a length, which do not cut."""
    import seqio
    cut = total = longest = 0
    tasks = seqio.get_mixture_or_task(name)
    for task in getattr(tasks, "tasks", [tasks]):
        if split not in task.splits:
            continue
        dataset = task.get_dataset(None, split=split, shuffle=False, num_epochs=1, use_cached=False)
        if num_examples:
            dataset = dataset.take(num_examples)
        for example in dataset.as_numpy_iterator():
            length = len(example["inputs"])
            cut, total, longest = cut + (length > inputs_length), total + 1, max(longest, length)
    return cut, total, longest


def aggregates(glue: dict) -> dict:
    """T5's GLUE average (`metrics.glue_average`) and the paper's GLUE score of `glue` ({GLUE task name
    (`sst2`, `mnli_matched`, ...): {metric: score in percent}}, e.g. `tasks.glue.results_by_glue_task(results)`);
    {} when it is empty."""
    if not glue:
        return {}
    paper, missing = metrics.paper_glue_score(glue)
    return {"glue_average": metrics.glue_average(glue), "paper_glue_score": paper,
            "paper_glue_score_missing": missing, "undefined_scores": metrics.undefined_scores(glue)}


def markdown_table(results: dict, summary: dict, title: str = "") -> str:
    lines = [f"### {title}", ""] if title else []
    lines += ["| task | metric | score |", "|---|---|---:|"]
    for task in sorted(results):
        for name, value in sorted(results[task].items()):
            lines.append(f"| {task} | {name} | {value:.2f} |")
    undefined = summary.get("undefined_scores") or []
    if summary.get("glue_average") is not None and len(results) > 1:
        without = sorted({name.split("/")[0] for name in undefined})
        note = f" (without {', '.join(without)}: undefined)" if without else ""
        lines.append(f"| GLUE | T5's average of the tasks above (MNLI-m/mm one task; no WNLI, AX){note} | "
                     f"{summary['glue_average']:.2f} |")
    if summary.get("paper_glue_score") is not None and len(summary["paper_glue_score_missing"]) <= 6:
        missing = summary["paper_glue_score_missing"]
        note = f" (without {', '.join(missing)})" if missing else ""
        lines.append(f"| GLUE | paper's score{note} | {summary['paper_glue_score']:.2f} |")
    return "\n".join(lines) + "\n"


def write_results(workdir: str, results: dict, *, step: int | None, model: str, glue: dict | None = None) -> dict:
    """Writes `results.json` and `results.md` in `workdir` (process 0).

    Args:
      results: {seqio Task name: {metric: score}}, as `TaskEvaluator.evaluate` returns.
      step: the training step scored, or None for a finished model.
      model: how the table names the model.
      glue: the GLUE Tasks among `results` by GLUE task name, for the aggregate scores (see `aggregates`).

    Returns:
      The JSON payload: model, step, results and the aggregates.
    """
    summary = aggregates(glue or {})
    payload = {"model": model, "step": step, "results": results, **summary}
    if jax.process_index() == 0:
        files.makedirs(workdir)
        files.write_json(files.join(workdir, "results.json"), payload, indent=2, sort_keys=True)
        files.write_text(files.join(workdir, "results.md"),
                         markdown_table(results, summary, title=model if step is None else f"{model} (step {step})"))
    return payload
