"""`mode=finetune`: a model (random, HF or a miniend workdir) trained on a seqio Task or Mixture, its
validation set scored by decoding every `train.eval_every` steps, the best checkpoint kept as a HF
directory."""

from __future__ import annotations

import json

import numpy as np

from miniend_jax import build, config_checks, files, inputs
from miniend_jax.build import decode_settings, model_name
from miniend_jax.errors import CheckpointError, ConfigError, EvaluationInterrupted
from miniend_jax.inputs import best_metric, eval_task_names


def run(config, workdir: str):
    """Finetunes `config.model` on `tasks.train` with cross-entropy.

    Reads the model (`config.model`), the Tasks' files and `workdir`'s checkpoints (to resume). Writes to
    `workdir`: `config.json`, orbax checkpoints, `metrics.jsonl`, and on each better score of
    `tasks.best_metric` the HF directory `best/`, `best.json` and `results.json`/`results.md`.

    Returns:
      The final `TrainState`.

    Raises:
      ConfigError, CheckpointError: bad input, before anything is written.
      TrainingError: training cannot continue (the last good checkpoint is kept).
    """
    import jax
    from miniend_jax import parallel
    from miniend_jax.checkpoints.state import check_resumable
    from miniend_jax.train.loop import Models, Trainer
    from miniend_jax.train.resume import check_resume, models_record
    from miniend_jax.workdir import workdir_lock
    checked = config_checks.preflight(config, workdir)
    shape, model_config = checked.shape, checked.model
    with workdir_lock(workdir):  # one run at a time; a refused start leaves the workdir as it was
        data = inputs.build_task_data(config, jax.process_index(), jax.process_count())
        model_config, params = build.load_model(config.model, model_config, config.seed)
        data.inputs = {**data.inputs, "models": models_record(config)}
        restore_inputs = check_resume(config, workdir, check_resumable(workdir, model_config), data.inputs)
        config_checks.write_resolved_config(config, workdir)
        models = Models(spec=build.distill_spec(config), student_config=model_config,
                        student_init=lambda abstract: params)
        mesh = parallel.make_mesh(*shape)
        trainer = Trainer(build.train_settings(config), workdir, models, data, mesh,
                          on_evaluate=BestCheckpoint(config, workdir, model_config),
                          restore_inputs=restore_inputs)
        return trainer.run()


class BestCheckpoint:
    """`Trainer.on_evaluate` for finetuning: scores the validation split of `tasks.eval` by decoding and
    keeps the best parameters as a HF directory `<workdir>/best` with `best.json` (and the results of that
    evaluation as `results.json` / `results.md`; while no score is defined, those of the latest
    evaluation). Survives restarts: the best so far is read back."""

    def __init__(self, config, workdir: str, model_config):
        self.config, self.workdir, self.model_config = config, workdir, model_config
        self.task, self.metric = best_metric(config)
        self.evaluator = None
        self.best = None
        path = files.join(workdir, "best.json")
        if files.exists(path):
            try:
                saved = json.loads(files.read_text(path))
                value = saved["value"]
                if value is not None and not isinstance(value, (int, float)):
                    raise TypeError(f"value {value!r} is no number")
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
                raise CheckpointError(f"{path} is damaged ({type(error).__name__}: {error}); delete it to choose "
                                      "the best checkpoint afresh from the next evaluation.") from None
            if (saved.get("task"), saved.get("metric")) not in ((None, None), (self.task, self.metric)):
                raise ConfigError(f"{path} holds the best {saved.get('task')}/{saved.get('metric')}, this run "
                                  f"chooses by {self.task}/{self.metric}; set tasks.best_metric to match, or use a "
                                  "new --workdir.")
            self.best = value if value is not None and np.isfinite(value) else None  # a NaN is never best

    def __call__(self, trainer, params, step: int) -> dict:
        import jax
        from miniend_jax.checkpoints.hf import save_hf_checkpoint
        from miniend_jax.evaluation.evaluator import TaskEvaluator, write_results
        from tasks.glue import results_by_glue_task
        t = self.config.tasks
        if self.evaluator is None:
            self.evaluator = TaskEvaluator(eval_task_names(self.config), t.eval_split, trainer.student, trainer.mesh,
                                           trainer.rules, inputs_length=t.inputs_length,
                                           targets_length=t.targets_length, decode=decode_settings(self.config),
                                           num_examples=t.eval_examples,
                                           log_dir=files.join(self.workdir, "inference_eval"))
        should_stop = trainer.stop_requested if trainer else None
        results = self.evaluator.evaluate(params, step, should_stop=should_stop)
        if should_stop is not None and should_stop():  # saving a better model could outlast a preemption's grace
            raise EvaluationInterrupted(1, 1, "evaluations (scored, not yet kept)")
        if self.task not in results or self.metric not in results[self.task]:
            raise ConfigError(f"tasks.best_metric: {self.task}/{self.metric} is not among the scores "
                              f"{sorted(f'{k}/{m}' for k, v in results.items() for m in v)}; set it to one of them.")
        value = results[self.task][self.metric]
        if not np.isfinite(value):  # e.g. the Pearson correlation of a constant prediction
            print(f"{self.task}/{self.metric} is undefined at step {step} (NaN); the best checkpoint stays "
                  f"{'unset' if self.best is None else f'at {self.best:.2f}'}", flush=True)
            if self.best is None and jax.process_index() == 0:  # the scores exist even with no best yet
                write_results(self.workdir, results, step=step, model=model_name(self.config),
                              glue=results_by_glue_task(results))
        elif self.best is None or value > self.best:
            self.best = value
            host = jax.tree.map(np.asarray, _gather(params))
            if jax.process_index() == 0:
                vocab = self.config.data.vocab if files.exists(self.config.data.vocab) else None
                best = files.join(self.workdir, "best")
                save_hf_checkpoint(best, self.model_config, host, spiece_model=vocab,
                                   extra_ids=self.config.data.extra_ids,
                                   generation=decode_settings(self.config).generation_fields())
                _keep_generation_config(self.config.model, best)
                write_results(self.workdir, results, step=step, model=model_name(self.config),
                              glue=results_by_glue_task(results))
                # After best/ is complete; written whole or not at all: a kill never leaves half of it.
                files.write_json(files.join(self.workdir, "best.json"),
                                 {"step": step, "task": self.task, "metric": self.metric, "value": value})
                print(f"best {self.task}/{self.metric} {value:.2f} at step {step}: saved to {best}", flush=True)
        return {f"{task}/{name}": v for task, scores in results.items() for name, v in scores.items()}


def _keep_generation_config(section, directory: str) -> None:
    """A HF model's `generation_config.json` goes with its finetuned weights, so that decoding `best/` follows
    the same rule (`decode.length_penalty_rule="auto"`) as the evaluation that chose it."""
    source = files.join(section.path, "generation_config.json") if section.source == "hf" else ""
    if source and files.isfile(source):
        files.copy_file(source, files.join(directory, "generation_config.json"))


def _gather(params):
    import jax
    if jax.process_count() == 1:
        return jax.device_get(params)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(params, tiled=True)
