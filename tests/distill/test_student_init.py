"""Student initialisation from teacher layers."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from miniend_jax.distill.student_init import copy_teacher_layers, layer_map
from miniend_jax.errors import ConfigError
from miniend_jax.models import T5, T5Config, init_params


def test_layer_map_is_evenly_spaced_with_ends_kept():
    assert layer_map(12, 6) == [0, 2, 4, 7, 9, 11]
    assert layer_map(24, 6) == [0, 5, 9, 14, 18, 23]
    assert layer_map(6, 6) == list(range(6))
    assert layer_map(4, 1) == [3]
    with pytest.raises(ConfigError, match="student has 5 layers but the teacher only 4"):
        layer_map(4, 5)


def _teacher_and_student(student_decoder_layers: int):
    """(teacher config, student config, teacher params, student params) of a 4+3-layer teacher and a
    2-encoder-layer student."""
    teacher = T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_heads=2, num_encoder_layers=4,
                       num_decoder_layers=3, dropout_rate=0.0)
    student = teacher.replace(num_encoder_layers=2, num_decoder_layers=student_decoder_layers)
    return (teacher, student, nn.unbox(init_params(teacher, jax.random.PRNGKey(0))),
            nn.unbox(init_params(student, jax.random.PRNGKey(1))))


def test_copied_student_holds_the_mapped_teacher_layers():
    teacher, student, t_params, s_abstract = _teacher_and_student(3)
    s_params = copy_teacher_layers(t_params, teacher, student, s_abstract)
    np.testing.assert_array_equal(s_params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"],
                                  t_params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"])
    np.testing.assert_array_equal(s_params["encoder"]["layers_1"]["attention"]["query"]["kernel"],
                                  t_params["encoder"]["layers_3"]["attention"]["query"]["kernel"])
    np.testing.assert_array_equal(s_params["token_embedder"]["embedding"], t_params["token_embedder"]["embedding"])
    # With the teacher's full decoder, a copied decoder computes what the teacher's does given the same encoding.
    full = copy_teacher_layers(t_params, teacher, teacher, t_params)
    tokens = np.array([[5, 6, 7, 1]])
    np.testing.assert_array_equal(T5(teacher).apply({"params": full}, tokens, tokens).logits,
                                  T5(teacher).apply({"params": t_params}, tokens, tokens).logits)
    with pytest.raises(ConfigError, match="d_model"):
        copy_teacher_layers(t_params, teacher, student.replace(d_model=32), s_abstract)


def test_copy_between_scanned_layouts():
    """A scanned teacher into a scanned student holds the same tensors as the unrolled copy."""
    from miniend_jax.models.common import stack_layers, unstack_layers
    teacher, student, t_params, s_abstract = _teacher_and_student(2)
    unrolled = copy_teacher_layers(t_params, teacher, student, s_abstract)
    scanned = copy_teacher_layers(stack_layers(t_params), teacher.replace(scan_layers=True),
                                  student.replace(scan_layers=True), stack_layers(s_abstract))
    assert scanned["encoder"]["layers"]["mlp"]["wo"]["kernel"].shape[0] == 2
    jax.tree.map(np.testing.assert_array_equal, unstack_layers(scanned), unrolled)
