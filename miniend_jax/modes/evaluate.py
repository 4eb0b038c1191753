"""`mode=evaluate`: a model (random, HF or a miniend workdir) decoded on the validation (or chosen) split of
seqio Tasks and scored; `results.json` and a markdown table."""

from __future__ import annotations


from miniend_jax import build, config_checks, files, inputs
from miniend_jax.errors import ConfigError
from miniend_jax.workdir import workdir_lock


def run(config, workdir: str) -> dict:
    """Scores `config.model` on the `tasks.eval_split` of each of `tasks.eval`.

    Reads the model and the Tasks' files. Writes `<workdir>/results.json` and `results.md` (process 0) and
    prints the table.

    Returns:
      The written payload: per-Task scores (GLUE metrics in percent, ROUGE F-measures x 100) and aggregates.

    Raises:
      ConfigError, CheckpointError: bad input, before any weight is read; a workdir that a training run
        holds (its lock) or that holds a finetuning run's results (`best.json`: its `results.json` is
        that run's).
    """
    checked = config_checks.preflight(config, workdir)
    shape, model_config = checked.shape, checked.model
    if files.exists(files.join(workdir, "best.json")):
        raise ConfigError(f"--workdir={workdir} holds a finetuning run (best.json), whose results.json this "
                          "evaluation would replace; write the evaluation to another --workdir (model.path may "
                          "point at this one's best/).")
    with workdir_lock(workdir):  # not beside a training run in the same workdir
        return _evaluate(config, workdir, shape, model_config)


def _evaluate(config, workdir: str, shape, model_config) -> dict:
    import jax
    from miniend_jax.evaluation.evaluator import TaskEvaluator, markdown_table, write_results
    from miniend_jax.models.registry import module
    from tasks.glue import results_by_glue_task
    model_config, params, mesh, rules = build.model_on_mesh(config, shape, model_config)
    t = config.tasks
    evaluator = TaskEvaluator(inputs.eval_task_names(config), t.eval_split, module(model_config), mesh, rules,
                              inputs_length=t.inputs_length, targets_length=t.targets_length,
                              decode=build.decode_settings(config), num_examples=t.eval_examples,
                              log_dir=files.join(workdir, "inference_eval"))
    results = evaluator.evaluate(params, step=0)  # logged as step 0: the model as loaded
    name = build.model_name(config)
    payload = write_results(workdir, results, step=None, model=name, glue=results_by_glue_task(results))
    if jax.process_index() == 0:
        print(markdown_table(results, payload, title=name), flush=True)
    return payload
