"""Measures what the compiled train step of a config allocates on this CPU (see tests/modes/test_plan.py).

Usage: plan_memory_check.py CONFIG_NAME. Compiles everything first, then resets the process's peak
resident memory (Linux `clear_refs`), creates the state, teacher and batch, runs one step, and prints
the growth of the peak over the resident memory before, in bytes, as JSON.
"""

import json
import sys

import numpy as np

sys.path.insert(0, ".")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

from miniend_jax import build, parallel, rss  # noqa: E402
from miniend_jax.modes import plan  # noqa: E402
from miniend_jax.models.registry import init_params  # noqa: E402
from miniend_jax.train.loop import step_layout  # noqa: E402
from miniend_jax.train.state import TrainState  # noqa: E402
from tests.conftest import config_with  # noqa: E402


def main(name: str):
    config = config_with(name)
    mesh = parallel.make_mesh(1, 1, 1)
    models = plan.plan_models(config)
    inputs_length, targets_length, packed = plan.feature_lengths(config)
    layout = step_layout(build.train_settings(config), models, mesh, parallel.DEFAULT_RULES)
    batch_spec = plan.abstract_batch(mesh, config.train.batch_size, inputs_length, targets_length, packed)
    rng = jax.random.PRNGKey(0)
    with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.DEFAULT_RULES):
        make_state = jax.jit(lambda r: TrainState.create(nn.unbox(init_params(models.student_config, r)),
                                                         layout.optimizer), out_shardings=layout.state_shardings)
        make_teacher = jax.jit(lambda r: nn.unbox(init_params(models.teacher_config, r)),
                               out_shardings=layout.teacher_shardings)
        compiled_state = make_state.lower(rng).compile()
        compiled_teacher = make_teacher.lower(rng).compile()
        step = layout.jit().lower(jax.eval_shape(make_state, rng), jax.eval_shape(make_teacher, rng),
                                  batch_spec).compile()
        host_batch = {k: np.ones(v.shape, v.dtype) for k, v in batch_spec.items()}
        rss.reset_peak()
        before = rss.resident_bytes()
        state, teacher = compiled_state(rng), compiled_teacher(rng)
        batch = jax.device_put(host_batch, parallel.batch_sharding(mesh))
        state, metrics = step(state, teacher, batch)
        jax.block_until_ready((state, metrics))
        peak = rss.peak_bytes()
    print(json.dumps({"allocated_bytes": peak - before, "loss": float(metrics["loss"])}))


if __name__ == "__main__":
    main(sys.argv[1])
