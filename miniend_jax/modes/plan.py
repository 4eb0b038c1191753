"""`mode=plan`: compile a config's train step for its mesh ahead of time, allocating nothing, and report
per-device memory, FLOPs and whether it fits the accelerator's memory.

The step is lowered from `jax.ShapeDtypeStruct`s carrying the run's `NamedSharding`s (state, teacher,
batch) and compiled by XLA for `plan.devices` devices; `python -m miniend_jax.main` simulates that many
CPU devices when the mode is `plan` (`simulate_devices`), so a laptop can plan a pod run. No weights are
read and no data is loaded: only shapes.

The figures come from the compiled executable (`memory_analysis`, `cost_analysis`). They are those of
XLA's CPU backend: TPU and GPU compilers fuse and lay out differently, so treat them as an estimate of
the accelerator's figures (parameters, optimizer state, inputs and outputs are exact; temporaries are
the compiler's).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from miniend_jax import build, config_checks, files
from miniend_jax.errors import ConfigError

GIB = 2 ** 30


@dataclasses.dataclass
class Plan:
    """Per-device bytes and FLOPs of one train step (all devices run the same SPMD program)."""

    devices: int
    mesh: dict
    argument_bytes: int      # state, teacher parameters, batch: what lives on the device between steps
    output_bytes: int
    alias_bytes: int         # outputs written in place of donated inputs (the state)
    temp_bytes: int          # activations, gradients, workspace during the step
    peak_bytes: int          # arguments + outputs - aliased + temporaries
    flops: float             # per device, from the compiled program
    model_flops: float       # whole step, counted from the shapes (train/flops.py), for comparison
    hbm_bytes: int
    fits: bool
    compile_seconds: float
    scanned: bool            # XLA's cost analysis counts a loop body once: `flops` undercounts scanned stacks

    def table(self) -> str:
        rows = [("devices", f"{self.devices} (mesh " + " x ".join(f"{k} {v}" for k, v in self.mesh.items()) + ")"),
                ("arguments (state, teacher, batch)", _gib(self.argument_bytes)),
                ("outputs (aliased with donated state)", f"{_gib(self.output_bytes)} ({_gib(self.alias_bytes)})"),
                ("temporaries", _gib(self.temp_bytes)),
                ("peak per device", _gib(self.peak_bytes)),
                ("HBM per device", _gib(self.hbm_bytes)),
                ("fits", f"{'yes' if self.fits else 'NO'} ({100 * self.peak_bytes / self.hbm_bytes:.0f}% of HBM)"),
                ("FLOPs per device per step (compiled)", _flop(self.flops)
                 + (" (each scanned stack's layer counted once)" if self.scanned else "")),
                ("model FLOPs per step, all devices (counted)", _flop(self.model_flops)),
                ("compile time", f"{self.compile_seconds:.1f} s")]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2 ** 20:.1f} MiB"


def _flop(n: float) -> str:
    return f"{n / 1e12:.2f} TFLOP" if n >= 1e12 else f"{n / 1e9:.2f} GFLOP"


def required_devices(config) -> int:
    """`plan.devices`, or the product of the mesh sizes when it is 0."""
    if config.plan.devices:
        return int(config.plan.devices)
    sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    if any(s == -1 for s in sizes):
        raise ConfigError(f"mode=plan: mesh=(data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}) has a -1, so "
                          "the device count is unknown; set --config.plan.devices=N (the pod slice's chips).")
    return int(np.prod(sizes))


def simulate_devices(config) -> None:
    """mode=plan compiles for `required_devices(config)` devices: simulate them on the CPU. Must run
    before JAX's backend starts; does nothing for other modes or once it has started."""
    if config.mode != "plan" or ("jax" in sys.modules and _jax_backend_started()):
        return
    flag = f"--xla_force_host_platform_device_count={required_devices(config)}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    os.environ["JAX_PLATFORMS"] = "cpu"


def _jax_backend_started() -> bool:
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()


def plan_models(config):
    """The `Models` of the run, from configs only (no weights are read)."""
    from miniend_jax.train.loop import Models
    spec = build.distill_spec(config)
    if config.mode == "finetune":
        student = build.model_config(config.model, "model", dropout_rate=config.model.dropout_rate)
        return Models(spec=spec, student_config=student)
    student = build.student_config(config)
    teacher = _teacher_config(config) if spec.needs_teacher else None
    return Models(spec=spec, student_config=student, teacher_config=teacher)


def _teacher_config(config):
    """The teacher's shape: from its checkpoint's config when the path exists on this machine, else (also
    for a cloud path: a plan reads nothing from storage) from `teacher.preset`."""
    from miniend_jax.models.registry import get_preset
    t = config.teacher
    if t.source == "preset" or config_checks.checked_here(t.path, paths_here=False):
        return build.teacher_config(config)
    teacher = get_preset(t.preset, dtype=t.dtype, param_dtype=t.param_dtype, scan_layers=t.scan_layers,
                         dropout_rate=0.0)
    student = build.student_config(config)
    if teacher.family != student.family:
        raise ConfigError(f"teacher.preset={t.preset!r} is a {teacher.family} shape but the student a {student.family} "
                          f"one; teacher.path={t.path!r} is not read by a plan, so set teacher.preset to the shape "
                          "that path holds.")
    print(f"plan: teacher.path={t.path!r} is not {'read by a plan' if files.is_cloud(t.path) else 'here'}; "
          f"planning with the shape of teacher.preset={t.preset!r}", flush=True)
    return teacher


def feature_lengths(config) -> tuple[int, int, bool]:
    """(inputs length, targets length, packed) of the run's batches."""
    if config.mode == "finetune":
        t = config.tasks
        return t.inputs_length, t.targets_length, bool(config.data.pack)
    from miniend_jax.inputs import pretraining_lengths
    lengths = pretraining_lengths(config.data)
    return lengths["inputs"], lengths["targets"], bool(config.data.pack)


def abstract_batch(mesh, batch_size: int, inputs_length: int, targets_length: int, packed: bool) -> dict:
    """The step's batch as `ShapeDtypeStruct`s sharded like the loop's input."""
    import jax
    import jax.numpy as jnp
    from miniend_jax import parallel
    sharding = parallel.batch_sharding(mesh)
    spec = lambda length: jax.ShapeDtypeStruct((batch_size, length), jnp.int32, sharding=sharding)
    batch = {"encoder_input_tokens": spec(inputs_length), "decoder_input_tokens": spec(targets_length),
             "decoder_target_tokens": spec(targets_length), "decoder_loss_weights": spec(targets_length)}
    if packed:
        batch.update(encoder_segment_ids=spec(inputs_length), decoder_segment_ids=spec(targets_length))
    return batch


def plan(config, mesh=None) -> Plan:
    """Compiles `config`'s train step over `mesh` (default: the config's mesh over all devices)."""
    import flax.linen as nn
    import jax
    from miniend_jax import parallel
    from miniend_jax.train import flops
    from miniend_jax.train.loop import step_layout

    if config.mode not in ("distill", "pretrain", "finetune"):
        raise ConfigError(f"mode={config.mode!r} has no train step to plan.")
    if mesh is None:
        shape = config_checks.validate_layout(config, 1, jax.device_count())
        mesh = parallel.make_mesh(*shape)
    models = plan_models(config)
    config_checks.check_models(config, tuple(mesh.shape[a] for a in parallel.MESH_AXES), models, paths_here=False)
    inputs_length, targets_length, packed = feature_lengths(config)
    rules = parallel.rules_from_config(config.mesh.get("rules", {}))
    layout = step_layout(build.train_settings(config), models, mesh, rules)
    with_sharding = lambda tree, shardings: jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
    state = with_sharding(layout.abstract_state, layout.state_shardings)
    teacher = (with_sharding(layout.abstract_teacher, layout.teacher_shardings)
               if layout.teacher is not None else None)
    batch = abstract_batch(mesh, config.train.batch_size, inputs_length, targets_length, packed)
    start = time.time()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        compiled = layout.jit().lower(state, teacher, batch).compile()
    seconds = time.time() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes)
    b = config.train.batch_size
    model_flops = flops.train_flops(models.student_config, b, inputs_length, targets_length)
    if models.teacher_config is not None:
        model_flops += flops.forward_flops(models.teacher_config, b, inputs_length, targets_length)
    hbm = int(config.plan.hbm_gib * GIB)
    return Plan(devices=mesh.size, mesh=dict(mesh.shape), argument_bytes=int(memory.argument_size_in_bytes),
                output_bytes=int(memory.output_size_in_bytes), alias_bytes=int(memory.alias_size_in_bytes),
                temp_bytes=int(memory.temp_size_in_bytes), peak_bytes=int(peak), flops=float(cost.get("flops", 0.0)),
                model_flops=model_flops, hbm_bytes=hbm, fits=peak <= hbm, compile_seconds=seconds,
                scanned=any(c is not None and c.scan_layers for c in (models.student_config, models.teacher_config)))


def run(config, workdir: str) -> Plan:
    """`mode=plan`: the plan of `config.plan.step`'s train step, printed and written to `<workdir>/plan.json`
    (process 0). Reads no weights and no data.

    Raises:
      ConfigError: JAX has another number of devices than the plan needs, or the config cannot be planned
        (the mesh does not fit, a dimension does not divide over it).
    """
    import jax
    needed = required_devices(config)
    if jax.device_count() != needed:
        raise ConfigError(
            f"mode=plan needs {needed} devices but JAX has {jax.device_count()}; run it through "
            f"`python -m miniend_jax.main` (which simulates them) or set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={needed} before JAX starts.")
    step_config = config.copy_and_resolve_references()
    step_config.mode = config.plan.step
    result = plan(step_config)
    files.makedirs(workdir)
    if jax.process_index() == 0:
        files.write_json(files.join(workdir, "plan.json"), dataclasses.asdict(result), indent=2)
        print(result.table(), flush=True)
    return result
