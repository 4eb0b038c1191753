"""`mode=distill` (a student from a frozen teacher, with one of the objectives of
`distill/objectives.py`) and `mode=pretrain` (a model from scratch on span corruption: the from-scratch
baseline, or a teacher). One function for both: pretraining is distillation without a teacher."""

from __future__ import annotations

from miniend_jax import build, config_checks, inputs


def run(config, workdir: str):
    """Trains the student of `config` on span corruption, against the teacher when `mode=distill`.

    Reads the teacher (`config.teacher`, distill only), the corpus (`config.data`) and `workdir`'s
    checkpoints (to resume). Writes to `workdir`: `config.json`, orbax checkpoints with the input
    positions, `metrics.jsonl`; and, when `export.at_end` and the run reaches `train.steps`, the student as
    a HF directory (see `modes/export.py`).

    Returns:
      The final `TrainState` (the student's parameters and optimizer state, replicated or sharded on the
      mesh).

    Raises:
      ConfigError, CheckpointError: bad input, before anything is written.
      TrainingError: training cannot continue (the last good checkpoint is kept).
    """
    import jax
    from miniend_jax import parallel
    from miniend_jax.checkpoints.state import check_resumable
    from miniend_jax.distill.student_init import copy_teacher_layers
    from miniend_jax.modes import export
    from miniend_jax.train.loop import Models, Trainer
    from miniend_jax.train.resume import check_resume, models_record
    from miniend_jax.workdir import workdir_lock

    checked = config_checks.preflight(config, workdir)
    shape, spec, student, teacher = checked.shape, checked.spec, checked.model, checked.teacher
    with workdir_lock(workdir):  # one run at a time; a refused start leaves the workdir as it was
        data = inputs.build_data(config, jax.process_index(), jax.process_count(), workdir)
        data.inputs = {**data.inputs, "models": models_record(config)}
        restore_inputs = check_resume(config, workdir, check_resumable(workdir, student), data.inputs)
        teacher_params = None
        if teacher is not None:
            teacher, teacher_params = build.load_teacher(config, teacher)
        config_checks.write_resolved_config(config, workdir)
        init = None
        if config.student.init == "teacher_layers":
            init = lambda abstract: copy_teacher_layers(teacher_params, teacher, student, abstract)
        models = Models(spec=spec, student_config=student, teacher_config=teacher, teacher_params=teacher_params,
                        student_init=init)
        mesh = parallel.make_mesh(*shape)
        trainer = Trainer(build.train_settings(config), workdir, models, data, mesh, restore_inputs=restore_inputs)
        state = trainer.run()
        if config.export.at_end and int(state.step) == config.train.steps and not trainer.stopped:
            export.run(config, workdir)  # not after a stop request, even at the last step
        return state
