"""`mode=infer`: a model (a miniend workdir, a HF directory, or a preset) decodes a seqio Task's split or a
file of inputs, greedy or with beams, batched over the mesh, into JSONL.

Inputs (`infer.input`):
- a registered Task or Mixture name (`glue_sst2`, `summ_xsum`, a `cls_<dir>` Task, `glue_submission`): its
  `tasks.eval_split` split, preprocessed as for evaluation (each row also gets the Task, the split, the
  example's `idx` where the Task has one, and the target); a split without labels (GLUE's `test`) is
  decoded like any other, its targets being `<unk>`. The Tasks of a Mixture that lack the split are left
  out, as seqio's Evaluator does;
- a `.jsonl` file: the text of field `infer.field` of each line;
- any other file: one input per line, as given (no Task prefix is added).

Each input is tokenized with `data.vocab` and cut to `tasks.inputs_length` tokens (EOS kept, seqio's
`append_eos_after_trim`); how many inputs were cut is printed and written to the summary. `decode.*` sets
greedy or beam search and the batch; `decode.max_length` (or `tasks.targets_length`) the generated tokens.
Output (`infer.output`, default `<workdir>/predictions.jsonl`; an existing file is never replaced), one line
per input in input order: `{"index", "input", "input_tokens", "truncated", "prediction", "score"}` (+
`"task"`, `"split"`, `"idx"`, `"target"` for a Task), where `input` is the whole text, `input_tokens` its
token count with EOS before the cut, `truncated` whether it was cut (the model read only its first
`tasks.inputs_length` tokens), and `score` the hypothesis's natural-log probability for greedy decoding and, for beams, its
log-probability divided by the length penalty of `decode.length_penalty_rule`: `"t5"` (t5x's beam score)
((5 + length) / 6) ** `decode.length_penalty`, the plain log-probability when no hypothesis ended within
the length limit; `"hf"` (HF's `sequences_scores`) length ** `decode.length_penalty`; length counts the
generated tokens with EOS. Next to it, `<output>.summary.json`: `{"input", "model", "predictions", "inputs",
"truncated", "inputs_length", "longest_input_tokens"}`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from miniend_jax import build, config_checks, files, inputs
from miniend_jax.errors import ConfigError


def _place(text: str, output: str) -> None:
    """Writes `output` whole, never replacing a file another run wrote meanwhile (local: a hard link of a
    staged file, which fails where the name exists; object storage: a create-only-if-absent upload).

    Raises:
      ConfigError: `output` appeared while this run decoded (local: this run's predictions are kept).
    """
    if files.is_cloud(output):
        try:
            files.create_exclusive(output, text.encode("utf-8"))
        except FileExistsError:
            raise ConfigError(f"{output} was written by another run while this one decoded; set "
                              "--config.infer.output to a new file and run again.") from None
        return
    output = files.absolute(output)
    staged = f"{output}.{os.getpid()}.tmp"  # per run: two runs to one output never share it
    with open(staged, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        os.link(staged, output)
    except FileExistsError:
        raise ConfigError(f"{output} was written by another run while this one decoded; this run's "
                          f"predictions are in {staged}.") from None
    os.unlink(staged)


def read_file_inputs(path: str, field: str) -> list[str]:
    """The input texts of a `.jsonl` file (field `field` of each line) or a text file (one per line).

    Every line must be readable: an output line answers each input line, so a damaged one stops the run
    whatever `data.on_bad_input` says (skipping it would shift the outputs against the inputs).

    Raises:
      ConfigError: the file is missing or empty, a line is not valid UTF-8 or not JSON, or lacks `field` or
        holds a non-string; naming the file and line.
    """
    from tasks.task_files import read_lines
    if not files.isfile(path):
        raise ConfigError(f"infer.input={path!r} is not a file; give a .jsonl or text file of inputs, or a "
                          "registered Task name.")
    texts = []
    for number, line, problem in read_lines(path):
        if problem is not None:
            raise ConfigError(f"{path} line {number} {problem}; save the file as UTF-8 (or delete that line).")
        if not line.strip():
            continue
        if not path.endswith(".jsonl"):
            texts.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} line {number} is not JSON ({error.msg}); write one JSON object "
                              "per line.") from None
        value = row.get(field) if isinstance(row, dict) else None
        if not isinstance(value, str):
            found = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ConfigError(f"{path} line {number} has no string field {field!r} (found {found}); "
                              "set infer.field to the field holding the input text.")
        texts.append(value)
    if not texts:
        raise ConfigError(f"infer.input={path!r} holds no input; write one input per line.")
    return texts


def _task_inputs(config, name: str) -> list[dict]:
    """Every example of the Tasks of `name` that have `tasks.eval_split`, in it: task, split, idx (where the
    Task has one), input and target text, token ids (cut to `tasks.inputs_length`) and `input_tokens`, the
    input's length with EOS before the cut."""
    from tasks import runtime  # noqa: F401,I001 - before seqio: TensorFlow on the host, quiet
    import seqio
    t = config.tasks
    rows = []
    for task_name in inputs.task_names(name):
        task = seqio.get_mixture_or_task(task_name)
        if t.eval_split not in task.splits:
            continue
        dataset = task.get_dataset({"inputs": t.inputs_length, "targets": t.targets_length}, split=t.eval_split,
                                   shuffle=False, num_epochs=1, use_cached=False)
        vocab = task.output_features["inputs"].vocabulary
        for example in dataset.as_numpy_iterator():
            text = example["inputs_pretokenized"].decode()
            idx = {"idx": int(example["idx"])} if "idx" in example else {}
            rows.append({"task": task_name, "split": t.eval_split, **idx, "input": text,
                         "target": example["targets_pretokenized"].decode(), "ids": example["inputs"],
                         "input_tokens": len(vocab.encode(text)) + 1})
    return rows


def truncation_summary(rows: list[dict], inputs_length: int) -> dict:
    """How many inputs were cut: {"inputs", "truncated", "inputs_length", "longest_input_tokens"}, from
    each row's `input_tokens` (its token count with EOS before the cut to `inputs_length`)."""
    lengths = [row["input_tokens"] for row in rows]
    return {"inputs": len(rows), "truncated": sum(n > inputs_length for n in lengths),
            "inputs_length": inputs_length, "longest_input_tokens": max(lengths, default=0)}


def summary_path(output: str) -> str:
    """The JSON summary written next to the predictions `output`: `<output>.summary.json`."""
    return output + ".summary.json"


def _progress(total: int):
    """`on_batch(done)` printing examples decoded, rate and ETA (at most every 10 s, and at the end)."""
    start, last = time.time(), [0.0]

    def on_batch(done: int) -> None:
        now = time.time()
        if now - last[0] < 10.0 and done < total:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        eta = time.strftime("%H:%M:%S", time.gmtime((total - done) / rate if rate else 0))
        print(f"infer: {done}/{total} examples ({100.0 * done / total:.0f}%) | {rate:.1f} examples/s | "
              f"ETA {eta}", flush=True)

    return on_batch


def run(config, workdir: str) -> str:
    """Decodes `infer.input` with `config.model`; returns the JSONL path written (see the module docstring).

    Raises:
      ConfigError, CheckpointError: bad input (a missing file, an unknown Task, a model that does not
        load, an output file that already exists), before any decoding.
    """
    import jax
    from miniend_jax.checkpoints.tokenizer import seqio_vocabulary
    from miniend_jax.evaluation.evaluator import decode_rows
    from miniend_jax.models.registry import module
    i, t = config.infer, config.tasks
    output = i.output or files.join(workdir, "predictions.jsonl")
    if files.exists(output):  # first: nothing else needs reading to know this
        raise ConfigError(f"{output} already holds predictions (an earlier run's); set --config.infer.output to a "
                          "new file, or move that one away.")
    checked = config_checks.preflight(config, workdir)
    shape, model_config = checked.shape, checked.model
    if inputs.is_file_input(i.input):
        texts = read_file_inputs(i.input, i.field)
        vocab = seqio_vocabulary(config.data.vocab, config.data.extra_ids)
        encoded = [vocab.encode(text) for text in texts]
        rows = [{"input": text, "ids": np.asarray(list(ids[: t.inputs_length - 1]) + [vocab.eos_id], np.int32),
                 "input_tokens": len(ids) + 1} for text, ids in zip(texts, encoded)]
    else:
        inputs.check_tasks(config, inputs.register_tasks(config), [("infer.input", i.input, t.eval_split)],
                           scored=False)
        rows = _task_inputs(config, i.input)
        if not rows:
            raise ConfigError(f"infer.input={i.input!r} has no examples in split {t.eval_split!r}.")
    if i.examples:
        rows = rows[: i.examples]
    files.makedirs(files.parent(output))

    model_config, params, mesh, rules = build.model_on_mesh(config, shape, model_config)
    tokens = np.zeros((len(rows), t.inputs_length), np.int32)
    for n, row in enumerate(rows):
        tokens[n, : len(row["ids"])] = row["ids"]
    decode = build.decode_settings(config)
    print(f"infer: {len(rows)} inputs from {i.input} with {build.model_name(config)} "
          f"({'greedy' if decode.num_beams == 1 else f'{decode.num_beams} beams'})", flush=True)
    summary = truncation_summary(rows, t.inputs_length)
    if summary["truncated"]:
        print(f"infer: {summary['truncated']} of {len(rows)} inputs are longer than tasks.inputs_length="
              f"{t.inputs_length} tokens (with EOS; the longest has {summary['longest_input_tokens']}) and are cut to "
              "it: the model reads only their beginning (each row's 'truncated' says which); raise "
              "tasks.inputs_length to decode them whole.", flush=True)
    decoded, scores = decode_rows(module(model_config), params, mesh, rules, tokens, decode,
                                  decode.max_length or t.targets_length, return_scores=True,
                                  on_batch=_progress(len(rows)))
    if jax.process_index() == 0:
        vocab = seqio_vocabulary(config.data.vocab, config.data.extra_ids)
        lines = []
        for n, (row, ids, score) in enumerate(zip(rows, decoded, scores)):
            ids = ids.tolist()
            ids = ids[: ids.index(model_config.eos_token_id)] if model_config.eos_token_id in ids else ids
            lines.append(json.dumps({"index": n, **{k: v for k, v in row.items() if k != "ids"},
                                     "truncated": row["input_tokens"] > t.inputs_length,
                                     "prediction": vocab.decode(ids), "score": float(score)}, ensure_ascii=False))
        _place("\n".join(lines) + "\n", output)
        files.write_json(summary_path(output), {"input": i.input, "model": build.model_name(config),
                                                "predictions": output, **summary}, indent=2)
        print(f"infer: {len(rows)} predictions in {output} ({summary['truncated']} inputs cut to "
              f"tasks.inputs_length={t.inputs_length}; summary in {summary_path(output)})", file=sys.stdout,
              flush=True)
    return output
