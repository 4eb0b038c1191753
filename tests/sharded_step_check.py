"""Run in a subprocess with 8 simulated CPU devices (see tests/test_parallel.py).

Usage: sharded_step_check.py REMAT {scan,loop} OPTIMIZER MESH... (each as d,f,t, e.g. 2,2,2). One
distillation step on each (data, fsdp, tensor) mesh and on one device; prints the max deviation of each
mesh's loss (relative to the single-device loss) and updated parameters (absolute) from the single-device
run, as JSON. Adam's eps is 1e-3 and Adafactor's 1e-2 so that one update is well conditioned
(tests/conftest.py, `update_tolerance`); Adafactor factors every array with two dimensions of 8 or more,
so its row and column statistics are sharded too.
"""

import json
import os
import sys

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from miniend_jax import parallel  # noqa: E402
from miniend_jax.distill.objectives import DistillSpec  # noqa: E402
from miniend_jax.models import T5, T5Config, init_params  # noqa: E402
from miniend_jax.train.state import TrainState, boxed_train_state, make_optimizer  # noqa: E402
from miniend_jax.train.step import make_train_step  # noqa: E402

SINGLE = (1, 1, 1)


def main(remat: str, scan_layers: bool, optimizer_name: str, meshes: list[tuple[int, int, int]]):
    teacher_cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_encoder_layers=2,
                           num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                           scale_decoder_outputs=False, dropout_rate=0.0)
    student_cfg = teacher_cfg.replace(d_model=16, d_kv=4, d_ff=32, num_encoder_layers=1, num_decoder_layers=2,
                                      remat=remat, scan_layers=scan_layers)
    teacher_cfg = teacher_cfg.replace(scan_layers=scan_layers)
    spec = DistillSpec(objective="miniend_d", relation_heads=8, weights=(("ground_truth", 0.5),))
    optim = ml_collections.ConfigDict(dict(name=optimizer_name, min_param_scale=1e-3, learning_rate=1e-2,
                                           weight_decay=0.01, warmup_fraction=0.0, warmup_steps=0, decay="linear", end_lr_fraction=0.0, clip_norm=1.0,
                                           b1=0.9, b2=0.99, eps=1e-3,
                                           adafactor=dict(decay_rate=0.8, clipping_threshold=1.0, momentum=0.0,
                                                          min_dim_size_to_factor=8, eps=1e-2)))
    optimizer, schedule = make_optimizer(optim, 10)
    rng = np.random.default_rng(0)
    enc = rng.integers(2, 64, (8, 16))
    dec_t = rng.integers(2, 64, (8, 8))
    for i in range(8):
        enc[i, rng.integers(4, 16):] = 0
        dec_t[i, rng.integers(2, 8):] = 0
    batch = {"encoder_input_tokens": enc, "decoder_target_tokens": dec_t,
             "decoder_input_tokens": np.concatenate([np.zeros((8, 1), int), dec_t[:, :-1]], 1)}
    teacher_boxed = init_params(teacher_cfg, jax.random.PRNGKey(0))
    student_boxed = init_params(student_cfg, jax.random.PRNGKey(1))
    step_fn = make_train_step(spec, T5(student_cfg), T5(teacher_cfg), optimizer, schedule, microbatches=2)
    results = {}
    for shape in [SINGLE, *meshes]:
        devices = jax.devices()[: int(np.prod(shape))]
        mesh = parallel.make_mesh(*shape, devices=devices)
        state_boxed = boxed_train_state(student_boxed, optimizer)
        state_sh = parallel.logical_sharding(state_boxed, mesh)
        teacher_sh = parallel.logical_sharding(teacher_boxed, mesh)
        state = jax.device_put(TrainState.create(nn.unbox(student_boxed), optimizer), state_sh)
        teacher = jax.device_put(nn.unbox(teacher_boxed), teacher_sh)
        sharded_batch = {k: jax.device_put(jnp.asarray(v), parallel.batch_sharding(mesh)) for k, v in batch.items()}
        with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.DEFAULT_RULES):
            step = jax.jit(step_fn, in_shardings=(state_sh, teacher_sh, None), out_shardings=(state_sh, None))
            new_state, metrics = step(state, teacher, sharded_batch)
        # The parameters really are laid out over the mesh.
        layer = new_state.params["decoder"]["layers" if scan_layers else "layers_0"]
        kernel = layer["mlp"]["wi_0"]["kernel"]
        # The optimizer's statistics of that kernel: Adam's first moment, or Adafactor's row statistic.
        stats = new_state.opt_state[1]  # after the clipping's state
        stats = {"adamw": lambda: stats[0].mu, "adamw_scaled": lambda: stats.mu,
                 "adafactor": lambda: stats.v_row}[optimizer_name]()
        statistic = stats["decoder"]["layers" if scan_layers else "layers_0"]["mlp"]["wi_0"]["kernel"]
        results[shape] = (float(metrics["loss"]), jax.device_get(new_state.params),
                          len(kernel.sharding.device_set), kernel.sharding.spec,
                          (statistic.shape, str(statistic.sharding.spec)))
    base_loss, base_params = results[SINGLE][:2]
    report = {}
    for shape in meshes:
        loss, params, n_devices, spec_, state_layout = results[shape]
        deviation = max(float(np.max(np.abs(a - b))) for a, b in
                        zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(base_params)))
        report[str(shape)] = {"loss_diff": abs(loss - base_loss) / abs(base_loss), "param_diff": deviation,
                              "devices": n_devices, "spec": str(spec_), "state": state_layout}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "scan", sys.argv[3], [tuple(int(n) for n in m.split(",")) for m in sys.argv[4:]])
