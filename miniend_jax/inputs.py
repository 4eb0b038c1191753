"""The run's inputs from its config: the pretraining Task (T5's span corruption or BART's denoising,
`data.objective`) and the loop's `Data` for pretraining and distillation; the GLUE, summarization and local classification Tasks, their checks and the loop's `Data`
for finetuning; which Tasks are scored and which score picks the best checkpoint.
"""

from __future__ import annotations

import os

from miniend_jax.errors import ConfigError, check


def build_data(config, process_index: int, process_count: int, workdir: str):
    """Registers the Task, checks it yields examples, and returns the loop's `Data`. With
    `data.source="hf"`, first writes the dataset's text under `workdir` (`tasks/hf_text.py`)."""
    from miniend_jax.train.loop import Data
    from miniend_jax.train.resume import input_record
    from tasks import pretraining as tp
    d = config.data
    kwargs = dict(noise_density=d.noise_density, mean_noise_span_length=d.mean_noise_span_length,
                  extra_ids=d.extra_ids)
    denoising = d.objective == "denoising"
    if d.source in ("files", "hf"):
        if d.source == "files":
            files, file_format, text_field = tp.resolve_files(d.files), d.format, d.text_field
        else:  # the dataset's text, written as jsonl files of {"text": ...}
            files, file_format, text_field = _hf_text_files(config, process_index, process_count, workdir), "jsonl", "text"
        scan = tp.scan_files(files, max_line_chars=d.max_line_chars, on_bad_input=d.on_bad_input,
                             file_format=file_format, text_field=text_field)
        if process_index == 0:
            print(f"input: {scan.summary()}", flush=True)
        if denoising:
            from tasks.denoising import register_local_denoising
            name = register_local_denoising(scan.files, d.vocab, file_format=file_format, text_field=text_field,
                                            validation_files=d.validation_files, mask_ratio=d.mask_ratio,
                                            poisson_lambda=d.poisson_lambda, permute_sentences=d.permute_sentences,
                                            max_line_chars=d.max_line_chars, extra_ids=d.extra_ids)
        else:
            name = tp.register_local_span_corruption(scan.files, d.vocab, file_format=file_format,
                                                     text_field=text_field, validation_files=d.validation_files,
                                                     max_line_chars=d.max_line_chars, **kwargs)
        record = input_record(d.source, scan.files, d.validation_files)
    else:
        name = tp.register_c4_span_corruption(d.vocab, tfds_name=d.tfds_name, data_dir=d.tfds_data_dir or None,
                                              **kwargs)
        record = input_record(d.source, tfds_name=d.tfds_name)
    lengths = pretraining_lengths(d)
    per_host = config.train.batch_size // process_count
    common = dict(pack=d.pack, shard_index=process_index, num_shards=process_count)
    probe = tp.get_dataset(name, lengths, split="train", batch_size=1, shuffle=False, seed=0, num_epochs=1, **common)
    if not any(True for _ in probe.take(1)):
        raise ConfigError(f"data.files={d.files!r} yields no training examples (empty or unreadable files, or "
                          f"data.format={d.format!r} does not match them); fix the corpus or the format.")
    train = iter(tp.get_dataset(name, lengths, split="train", batch_size=per_host, shuffle=True, seed=config.seed,
                                num_epochs=None, shuffle_buffer_size=d.shuffle_buffer, **common))
    make_eval = lambda: iter(tp.get_dataset(name, lengths, split="validation", batch_size=per_host, shuffle=False,
                                            seed=0, num_epochs=1, **common))
    return Data(train=train, make_eval=make_eval, inputs_length=lengths["inputs"],
                targets_length=lengths["targets"], inputs=record)


def pretraining_lengths(data) -> dict[str, int]:
    """{"inputs", "targets"} token lengths of the pretraining Task of `config.data`: span corruption's
    (`tasks.lengths.task_feature_lengths`), or for denoising, which reconstructs the whole chunk, targets as
    long as the inputs unless `data.targets_length` is set."""
    if data.objective == "denoising":
        return {"inputs": data.inputs_length, "targets": data.targets_length or data.inputs_length}
    from tasks.lengths import task_feature_lengths
    return task_feature_lengths(data.inputs_length, data.targets_length, data.noise_density,
                                data.mean_noise_span_length)


def _hf_text_files(config, process_index: int, process_count: int, workdir: str) -> list[str]:
    """The jsonl files of a HF dataset's text column: process 0 writes them (once per workdir and source),
    the others wait for it."""
    from tasks import hf_text
    d = config.data
    if process_index == 0:
        files = hf_text.export_text(d.hf_path, d.hf_split, d.text_field, hf_text.export_dir(workdir), d.hf_shards,
                                   d.on_bad_input)
    if process_count > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("hf_text export")
    return files if process_index == 0 else list(hf_text.exported_files(workdir, d.hf_shards))


def is_file_input(value: str) -> bool:
    """`infer.input` names a file (a path that exists, or one with a directory or a suffix), not a Task."""
    from miniend_jax import files
    return files.is_cloud(value) or os.path.exists(value) or os.sep in value or value.endswith((".jsonl", ".txt", ".tsv"))


def register_tasks(config) -> list[str]:
    """Registers the GLUE, summarization, local classification and HF-dataset (`tasks.hf`) Tasks (and the
    `glue` Mixture); returns the Task names. Every row of their local files is checked now: damaged rows
    are skipped and counted, or stop the run, by `data.on_bad_input` (`tasks/task_files.py`)."""
    from tasks import classification, glue, hf_tasks, summarization
    t, d = config.tasks, config.data
    tfds_dir = t.tfds_data_dir or None
    policy = d.on_bad_input
    names = glue.register(d.vocab, source=t.glue_source, data_dir=t.glue_dir, tfds_data_dir=tfds_dir,
                          extra_ids=d.extra_ids, on_bad_input=policy)
    names += summarization.register(d.vocab, source=t.summarization_source, data_dir=t.summarization_dir,
                                    tfds_data_dir=tfds_dir, extra_ids=d.extra_ids, on_bad_input=policy,
                                    instruction=t.summarization_instruction)
    names += [classification.register(directory, d.vocab, extra_ids=d.extra_ids, on_bad_input=policy)
              for directory in classification_dirs(config)]
    names += [hf_tasks.register(name, spec, d.vocab, extra_ids=d.extra_ids, on_bad_input=policy)
              for name, spec in hf_tasks.specs(config).items()]
    return names


def classification_dirs(config) -> list[str]:
    return [p.strip() for p in config.tasks.classification_dirs.split(",") if p.strip()]


def eval_task_names(config) -> list[str]:
    return [n.strip() for n in config.tasks.eval.split(",") if n.strip()]


def check_tasks(config, names: list[str], wanted: list[tuple[str, str, str]] | None = None, *,
                scored: bool = True) -> None:
    """Every named Task (or Mixture) is registered and its files for the splits used are on disk; with
    `scored` (modes evaluate and finetune), no split scored is one without labels (`unlabelled`).

    `wanted`: (config field, Task or Mixture name, split) to check; default those of `tasks.eval` (and
    `tasks.train` when finetuning, whose `tasks.eval_split` also gives the validation loss).

    Raises:
      ConfigError: naming the field, the Task and split, and the fix.
    """
    from tasks import classification, glue, hf_tasks, summarization  # noqa: I001 - before seqio (tasks/runtime.py)
    import seqio
    t = config.tasks
    if wanted is None:
        wanted = [("tasks.eval", n, t.eval_split) for n in eval_task_names(config)]
        if config.mode == "finetune":
            wanted.insert(0, ("tasks.train", t.train, "train"))
    for field, name, split in wanted:
        if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
            glue.check_split(name, split, source=t.glue_source, data_dir=t.glue_dir)  # names a missing file
            raise ConfigError(f"{field}={name!r} is not a registered Task or Mixture; use one of "
                              f"{', '.join(sorted(names + list(seqio.MixtureRegistry.names())))}.")
        glue.check_split(name, split, source=t.glue_source, data_dir=t.glue_dir)
        for task_name in task_names(name):
            glue.check_targets_length(task_name, config.data.vocab, t.targets_length, config.data.extra_ids)
            for directory in classification_dirs(config):
                if classification.task_name(directory) == task_name:
                    classification.check_labels_fit(classification.labels_of(directory, config.data.on_bad_input),
                                                    config.data.vocab,
                                                    t.targets_length, config.data.extra_ids, task_name)
            if hf_tasks.labels(task_name):
                classification.check_labels_fit(hf_tasks.labels(task_name), config.data.vocab, t.targets_length,
                                                config.data.extra_ids, task_name)
        summarization.check_split(name, split, source=t.summarization_source, data_dir=t.summarization_dir,
                                  on_bad_input=config.data.on_bad_input)
        task = seqio.get_mixture_or_task(name)
        if split not in task.splits:
            raise ConfigError(f"{field}={name!r} has no split {split!r} (it has {', '.join(task.splits)}); "
                              "choose another task or split.")
        if scored:
            _check_labelled(field, name, split)
    if config.mode == "finetune":
        if scored and t.eval_split in seqio.get_mixture_or_task(t.train).splits:
            _check_labelled("tasks.train", t.train, t.eval_split)  # its validation loss
        check_best_metric(config)


def unlabelled(task_name: str, split: str) -> bool:
    """Whether `split` of the Task `task_name` has no labels to score against: GLUE's test splits (and
    AX), a `tasks.hf` classification split whose every label is missing (-1, e.g. GLUE's test splits
    from the HF hub)."""
    from tasks import glue, hf_tasks
    return glue.unlabelled(task_name, split) or hf_tasks.unlabelled(task_name, split)


def _check_labelled(field: str, name: str, split: str) -> None:
    """Raises a `ConfigError` when a Task of `name` that has `split` has no labels in it (seqio's Evaluator
    scores the Tasks of a Mixture that have the split): scoring would compare predictions with `<unk>`."""
    import seqio
    for task_name in task_names(name):
        if split in seqio.get_mixture_or_task(task_name).splits and unlabelled(task_name, split):
            raise ConfigError(
                f"{field}={name!r}: split {split!r} of {task_name} has no labels (GLUE keeps its test labels "
                "for the benchmark server), so there is nothing to score; decode it with --config.mode=infer "
                f"(then `python -m miniend_jax.glue_submission`), or score a labelled split such as 'validation'.")


# The families of downstream Tasks. Each module answers, for a Task name, `scores(name, config)`: (its
# score names, the main one) and `train_files(name, config)`: the files its train split is read from,
# both None for a Task of another family. A new family is a module with these two and a place here.
TASK_FAMILIES = ("tasks.glue", "tasks.summarization", "tasks.hf_tasks", "tasks.classification")


def _ask(question: str, name: str, config):
    """The first family's answer to `question` about Task `name` (None when no family owns it)."""
    import importlib
    for family in TASK_FAMILIES:
        answer = getattr(importlib.import_module(family), question)(name, config)
        if answer is not None:
            return answer
    return None


def check_best_metric(config) -> None:
    """`tasks.best_metric` names an evaluated Task and one of its scores (checked before training)."""
    task, metric = best_metric(config)
    scored = scored_task_names(config)
    check(task in scored, "tasks.best_metric", config.tasks.best_metric,
           f"name one of the evaluated Tasks ({', '.join(scored)}; a Mixture is scored as its Tasks) before the '/'.")
    known = (_ask("scores", task, config) or (None, None))[0]
    check(known is None or metric in known, "tasks.best_metric", f"{task}/{metric}",
           f"{task} reports {', '.join(known or [])}; choose one of them.")


def scored_task_names(config) -> list[str]:
    """The Tasks `tasks.eval` scores: each named Task, and each Task of a named Mixture."""
    return [task for name in eval_task_names(config) for task in task_names(name)]


def task_names(name: str) -> list[str]:
    """The Tasks of a Task or Mixture name."""
    import seqio
    if name in seqio.MixtureRegistry.names():
        return [task.name for task in seqio.get_mixture_or_task(name).tasks]
    return [name]


def train_files(config) -> list[str]:
    """The files the `train` split of each Task of `tasks.train` is read from, for the local sources (GLUE,
    summarization, classification directories, `tasks.hf` datasets; each family says, `TASK_FAMILIES`);
    TFDS sources have none here."""
    return [f for name in task_names(config.tasks.train) for f in _ask("train_files", name, config) or []]


def build_task_data(config, process_index: int, process_count: int):
    """The loop's `Data` for finetuning: `tasks.train` (shuffled, repeated) and its validation loss."""
    from miniend_jax.train.loop import Data
    from miniend_jax.train.resume import input_record
    from tasks import pretraining as tp  # noqa: I001 - before seqio (tasks/runtime.py)
    import seqio
    t = config.tasks
    lengths = {"inputs": t.inputs_length, "targets": t.targets_length}
    per_host = config.train.batch_size // process_count
    common = dict(pack=config.data.pack, shard_index=process_index, num_shards=process_count)
    train = iter(tp.get_dataset(t.train, lengths, split="train", batch_size=per_host, shuffle=True,
                                seed=config.seed, num_epochs=None, shuffle_buffer_size=config.data.shuffle_buffer,
                                **common))
    make_eval = None
    if t.eval_split in seqio.get_mixture_or_task(t.train).splits:
        make_eval = lambda: iter(tp.get_dataset(t.train, lengths, split=t.eval_split, batch_size=per_host,
                                                shuffle=False, seed=0, num_epochs=1, **common))
    record = input_record(f"tasks:{t.train}", train_files(config))
    return Data(train=train, make_eval=make_eval, inputs_length=t.inputs_length, targets_length=t.targets_length,
                inputs=record)


def best_metric(config) -> tuple[str, str]:
    """(task, metric) that picks the best finetuning checkpoint: `tasks.best_metric`, else the first scored
    Task's main score, as its family says (`TASK_FAMILIES`: GLUE's, rougeL, accuracy, or the first named
    metric of a `tasks.hf` Task)."""
    if config.tasks.best_metric:
        task, _, metric = config.tasks.best_metric.partition("/")
        return task, metric
    task = scored_task_names(config)[0]
    return task, (_ask("scores", task, config) or (None, "rougeL"))[1]


