"""Student initialisation: random (the author's MiniLM code), or copied teacher layers.

Copying takes evenly spaced teacher layers, first and last kept (`layer_map`), with the embedding,
position tables, norms and head; it needs both models of one family and every copied tensor's shape to
match, which holds when the student has the teacher's widths (the family's `copy_fields`) and fewer layers.
For 12 teacher layers this picks distilbart's layers (Shleifer & Rush 2020, `make_student.py`): 6 students
layers [0, 2, 4, 7, 9, 11], 3 layers [0, 6, 11].
"""

from __future__ import annotations

import numpy as np
from flax import traverse_util

from miniend_jax.errors import ConfigError
from miniend_jax.models.registry import family_of, to_layout, unstack_layers

INIT_MODES = ("random", "teacher_layers")


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layer indices for each student layer, first and last kept.

    `round(i * (teacher_layers - 1) / (student_layers - 1))` for student layer i; one student layer
    takes the teacher's last.

    Raises:
      ConfigError: the student has more layers than the teacher.
    """
    if student_layers > teacher_layers:
        raise ConfigError(f"student has {student_layers} layers but the teacher only {teacher_layers}; "
                          "teacher_layers init needs a shallower (or equal) student.")
    if student_layers == 1:
        return [teacher_layers - 1]
    return [int(round(i * (teacher_layers - 1) / (student_layers - 1))) for i in range(student_layers)]


def check_copyable(teacher_config, student_config) -> None:
    """Raises `ConfigError` unless the student can be initialised from the teacher's layers."""
    family = family_of(teacher_config)
    if family_of(student_config) is not family:
        raise ConfigError(f"student.init='teacher_layers' copies tensors, but the teacher is a {family.name} model and "
                          f"the student a {family_of(student_config).name} one; use student.init='random' or a "
                          f"{family.name} student preset.")
    mismatched = [f for f in family.copy_fields if getattr(teacher_config, f) != getattr(student_config, f)]
    if mismatched:
        raise ConfigError(
            f"student.init='teacher_layers' needs the teacher's widths, but {', '.join(mismatched)} differ; "
            "use student.init='random' or give the student the teacher's widths.")
    layer_map(teacher_config.num_encoder_layers, student_config.num_encoder_layers)
    layer_map(teacher_config.num_decoder_layers, student_config.num_decoder_layers)


def copy_teacher_layers(teacher_params, teacher_config, student_config, student_params):
    """Student params with every tensor taken from the teacher (layers per `layer_map`).

    `student_params` (unboxed) gives the target structure and shapes; returns numpy arrays in the
    student's parameter dtype.

    Args:
      teacher_params: unboxed teacher parameters, either layout.
      teacher_config, student_config: the two models' configs.
      student_params: unboxed student parameters, either layout (only structure and dtypes are read).

    Returns:
      The student's parameters (numpy) in the layout `student_config.scan_layers` asks for.

    Raises:
      ConfigError: see `check_copyable`.
    """
    check_copyable(teacher_config, student_config)
    maps = {"encoder": layer_map(teacher_config.num_encoder_layers, student_config.num_encoder_layers),
            "decoder": layer_map(teacher_config.num_decoder_layers, student_config.num_decoder_layers)}
    teacher_flat = traverse_util.flatten_dict(unstack_layers(teacher_params))
    out = {}
    for path, value in traverse_util.flatten_dict(unstack_layers(student_params)).items():
        source = list(path)
        if len(path) > 1 and path[0] in maps and path[1].startswith("layers_"):
            source[1] = f"layers_{maps[path[0]][int(path[1].split('_')[1])]}"
        out[path] = np.asarray(teacher_flat[tuple(source)]).astype(value.dtype)
    return to_layout(traverse_util.unflatten_dict(out), student_config)
