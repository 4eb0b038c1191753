"""Device mesh and logical axis rules: how parameters and activations are laid out over devices.

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data parallelism with parameters
and optimizer state sharded over it, ZeRO-3 style) and `tensor` (Megatron-style sharding of heads,
FFN and vocabulary). Model code names logical axes only (`embed`, `mlp`, `joined_kv`, ...); the rules
below map them to mesh axes, as t5x does.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from miniend_jax.errors import ConfigError, check

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis. Flax assigns a mesh axis to at most one dimension of an array, in order,
# so activations `("batch", "length", "embed")` shard batch over (data, fsdp) and leave embed whole,
# while a kernel `("embed", "mlp")` shards embed over fsdp and mlp over tensor.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("joined_kv", "tensor"),
    ("embed", "fsdp"),
    ("length", None),
    ("relpos_buckets", None),   # the position-bias table is tiny: replicated
    ("relpos_heads", None),
    ("layers", None),           # the depth axis of scanned stacks (`model.scan_layers`)
)


def rules_from_config(overrides) -> tuple:
    """`DEFAULT_RULES` with the config's `mesh.rules` applied: logical axis -> "" (replicated), one mesh
    axis ("fsdp") or several ("data,fsdp")."""
    rules = dict(DEFAULT_RULES)
    for logical, value in dict(overrides).items():
        if logical not in rules:
            raise ConfigError(f"mesh.rules.{logical}: not a logical axis; the axes are {', '.join(rules)}.")
        axes = tuple(a.strip() for a in str(value or "").split(",") if a.strip())
        unknown = [a for a in axes if a not in MESH_AXES]
        if unknown:
            raise ConfigError(f"mesh.rules.{logical}={value!r}: {unknown[0]!r} is not a mesh axis; use "
                              f"{', '.join(MESH_AXES)} (comma-separated), or '' to replicate.")
        rules[logical] = None if not axes else axes[0] if len(axes) == 1 else axes
    return tuple(rules.items())


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int | None = None) -> tuple[int, int, int]:
    """Resolves a `-1` entry (at most one) to fill the devices and checks the product."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    shape = [data, fsdp, tensor]
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ConfigError(f"mesh=(data={data}, fsdp={fsdp}, tensor={tensor}): use positive sizes and at "
                          "most one -1 (meaning 'all remaining devices').")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if num_devices % known:
            raise ConfigError(f"mesh: {num_devices} devices cannot be split into data={data}, fsdp={fsdp}, "
                              f"tensor={tensor}; choose sizes whose product divides {num_devices}.")
        shape[shape.index(-1)] = num_devices // known
    if int(np.prod(shape)) != num_devices:
        raise ConfigError(f"mesh: data*fsdp*tensor = {int(np.prod(shape))} but there are {num_devices} "
                          "devices; make the product equal the device count or set one size to -1.")
    return tuple(shape)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with classic GSPMD (auto) axis types."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(data, fsdp, tensor, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices)


def logical_sharding(tree, mesh: Mesh, rules=DEFAULT_RULES):
    """`NamedSharding`s for a tree of logically boxed values (params, or abstract params)."""
    specs = nn.get_partition_spec(tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Batch arrays `[batch, ...]`: batch over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def check_divisible(boxed_tree, shape: Sequence[int], rules, role: str) -> None:
    """Every dimension that the rules shard over mesh axes is divisible by the product of their sizes,
    as `jax.device_put` and `jit` require; checked on abstract (boxed) shapes, before anything compiles.

    `shape` is the resolved (data, fsdp, tensor) mesh shape; `role` names the model in the message.

    Raises:
      ConfigError: naming the parameter, its shape, the mesh axes and the fix.
    """
    sizes = dict(zip(MESH_AXES, shape))
    flat = jax.tree_util.tree_flatten_with_path(boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
    for path, leaf in flat:
        if not isinstance(leaf, nn.Partitioned):
            continue
        spec = nn.logical_to_mesh_axes(leaf.names, rules)
        for dim, (size, axes) in enumerate(zip(leaf.value.shape, spec)):
            axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
            ways = int(np.prod([sizes[a] for a in axes])) if axes else 1
            if size % ways:
                name = "/".join(str(getattr(k, "key", k)) for k in path)
                logical = leaf.names[dim]
                raise ConfigError(
                    f"{role} parameter {name} {tuple(leaf.value.shape)}: dimension {dim} ({logical}={size}) "
                    f"does not divide over mesh axes {'x'.join(axes)}={ways}; change mesh.{'/'.join(axes)} "
                    f"or the model's width, or replicate it with --config.mesh.rules.{logical}=''.")


def initialize_distributed(config) -> None:
    """Joins this process to a multi-host run (`config.distributed`); must precede any JAX computation.
    Without a coordinator address, `jax.distributed.initialize` finds the cluster itself (Cloud TPU, SLURM).

    Raises:
      ConfigError: `distributed.num_processes` or `distributed.process_id` is out of range.
    """
    d = config.distributed
    if not d.enabled or jax.distributed.is_initialized():
        return
    if d.coordinator_address:
        check(isinstance(d.num_processes, int) and d.num_processes >= 1, "distributed.num_processes",
               d.num_processes, "must be a positive integer: the number of processes in the run.")
        check(isinstance(d.process_id, int) and 0 <= d.process_id < d.num_processes, "distributed.process_id",
               d.process_id, f"must lie in [0, {d.num_processes}): this process's index, unique per host.")
        explicit = dict(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                        process_id=d.process_id)
    else:
        explicit = {}
    jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
    # A peer that stops (an error, a kill) ends every other process's collectives within the timeout,
    # rather than leaving them waiting for it.
    jax.distributed.initialize(**explicit, initialization_timeout=d.timeout_seconds,
                               heartbeat_timeout_seconds=d.timeout_seconds)
    if jax.process_index() == 0:
        print(f"distributed: {jax.process_count()} processes, {jax.device_count()} devices "
              f"({jax.local_device_count()} per process)", flush=True)
