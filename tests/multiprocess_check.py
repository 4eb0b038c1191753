"""One process of a multi-host distillation run on localhost (see tests/test_multiprocess.py).

Usage: multiprocess_check.py WORKDIR NUM_PROCESSES PROCESS_ID PORT [TOTAL_STEPS [MESH]], with XLA_FLAGS
giving each process its simulated CPU devices, MESH as d,f,t (default 2,2,2). A workdir that holds a
checkpoint is resumed (with TOTAL_STEPS beyond it), whatever number of processes and mesh wrote it; the
trained student then decodes the first batch greedily and prints the tokens and scores. The
optimizer is Adafactor with factored statistics (their shardings differ from the parameters'). Runs the project's own path:
`parallel.initialize_distributed`, the layout checks, the `Trainer` (global arrays assembled from each
process's rows, the sharded step, orbax checkpoints written by every process, metrics from process 0). The global batches are fixed, so a run of one
process with 8 devices and a run of two processes with 4 each see the same examples; each process
feeds the rows its devices hold.
"""

import sys

import numpy as np

sys.path.insert(0, ".")

from miniend_jax import build, config_checks, parallel  # noqa: E402
from tests.conftest import config_with  # noqa: E402

STEPS, BATCH, ENC_LEN, DEC_LEN = 4, 8, 32, 8


def global_batches(vocab_size: int) -> list[dict]:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(STEPS):
        enc = rng.integers(2, vocab_size, (BATCH, ENC_LEN))
        target = rng.integers(2, vocab_size, (BATCH, DEC_LEN))
        for i in range(BATCH):
            enc[i, rng.integers(8, ENC_LEN):] = 0
            target[i, rng.integers(2, DEC_LEN):] = 0
        decoder_input = np.concatenate([np.zeros((BATCH, 1), np.int64), target[:, :-1]], axis=1)
        batches.append({"encoder_input_tokens": enc, "decoder_target_tokens": target,
                        "decoder_input_tokens": decoder_input})
    return batches


def main(workdir: str, num_processes: int, process_id: int, port: int, total_steps: int = STEPS,
         mesh: str = "2,2,2"):
    data, fsdp, tensor = (int(n) for n in mesh.split(","))
    config = config_with("tiny", **{
        "optim.name": "adafactor", "optim.learning_rate": 1e-2, "optim.adafactor.min_dim_size_to_factor": 16,
        "train.steps": total_steps, "train.batch_size": BATCH, "train.checkpoint_every": 2,
        "train.async_checkpoints": False, "mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor,
        "distributed.enabled": num_processes > 1, "distributed.coordinator_address": f"127.0.0.1:{port}",
        "distributed.num_processes": num_processes, "distributed.process_id": process_id,
        "distributed.timeout_seconds": 120})
    config_checks.validate_config(config)
    parallel.initialize_distributed(config)

    import jax
    import tensorflow as tf
    from miniend_jax.train.loop import Data, Models, Trainer
    assert jax.process_count() == num_processes and jax.device_count() == 8, (jax.process_count(), jax.devices())

    shape = config_checks.validate_layout(config, jax.process_count(), jax.device_count())
    mesh = parallel.make_mesh(*shape)
    # The rows of the global batch that this process's devices hold (one contiguous block).
    rows = parallel.batch_sharding(mesh).addressable_devices_indices_map((BATCH, ENC_LEN)).values()
    start, stop = min(r[0].start or 0 for r in rows), max(r[0].stop or BATCH for r in rows)
    assert stop - start == BATCH // num_processes, (start, stop)

    spec = build.distill_spec(config)
    student = build.student_config(config)
    teacher, teacher_params = build.load_teacher(config, build.teacher_config(config))
    local = {k: np.stack([b[k][start:stop] for b in global_batches(student.vocab_size)])
             for k in ("encoder_input_tokens", "decoder_target_tokens", "decoder_input_tokens")}
    data = Data(train=iter(tf.data.Dataset.from_tensor_slices(local)), make_eval=None,
                inputs_length=ENC_LEN, targets_length=DEC_LEN)
    models = Models(spec=spec, student_config=student, teacher_config=teacher, teacher_params=teacher_params)
    config_checks.write_resolved_config(config, workdir)
    state = Trainer(build.train_settings(config), workdir, models, data, mesh).run()
    # Decoding with the sharded student, as evaluate / infer / finetuning's evaluation do: every process
    # gives the same inputs and must get every row back (its devices hold only some of them).
    import json
    from miniend_jax.evaluation.evaluator import DecodeSettings, decode_rows
    from miniend_jax.models.t5 import T5
    inputs = global_batches(student.vocab_size)[0]["encoder_input_tokens"].astype(np.int32)
    tokens, scores = decode_rows(T5(student), state.params, mesh, parallel.rules_from_config(config.mesh.rules),
                                 inputs, DecodeSettings(num_beams=1, batch_size=BATCH), 6, return_scores=True)
    print("decoded " + json.dumps({"tokens": tokens.tolist(), "scores": scores.tolist()}), flush=True)
    print(f"process {process_id} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *map(int, sys.argv[5:6]), *sys.argv[6:7])
