"""Meshes, regex partition rules and global batches: JAX's own distribution, nothing home-made.

A run names its mesh in the config (`config.mesh`, e.g. `(("data", -1),)` or
`(("data", 8), ("fsdp", 4))`, -1 standing for the remaining devices). Every
parameter and optimizer-state leaf gets a `NamedSharding` from the first regex
rule of `config.sharding.rules` that matches its "a/b/c" name:

  "replicate"            a full copy on every device;
  "fsdp"                 split the largest dimension divisible by the fsdp axis
                         over that axis, for tensors of at least
                         `config.sharding.fsdp_min_size` elements (others are
                         replicated): ZeRO-3 style, which is what makes ViT-g fit;
  (None, "fsdp", ...)    an explicit PartitionSpec, one entry per dimension.

The batch is split over `config.sharding.batch_axes` (data and fsdp: with FSDP
every device sees different examples). On several hosts each process loads
only its own rows of the global batch and `global_batch` assembles them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rule = tuple[str, Any]
DISTRIBUTED_ENV = "GGA_JAX_DISTRIBUTED"


def initialize_distributed(enabled: bool = False) -> bool:
    """Calls `jax.distributed.initialize` when asked by flag or by $GGA_JAX_DISTRIBUTED=1.

    On TPU VM pod slices, SLURM and Open MPI clusters JAX finds the coordinator
    and the process ids itself. Elsewhere (a hand-made GPU cluster, or several
    CPU processes on one machine) set $JAX_COORDINATOR_ADDRESS (host:port of
    process 0) and $GGA_JAX_NUM_PROCESSES / $GGA_JAX_PROCESS_ID. Must run before
    anything touches a device. Returns whether it initialised.
    """
    if not (enabled or os.environ.get(DISTRIBUTED_ENV, "") in ("1", "true", "True")):
        return False
    kwargs = {}
    if "GGA_JAX_NUM_PROCESSES" in os.environ:
        kwargs = dict(
            coordinator_address=os.environ.get("JAX_COORDINATOR_ADDRESS"),
            num_processes=int(os.environ["GGA_JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["GGA_JAX_PROCESS_ID"]),
        )
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        # CPU processes exchange arrays through gloo; the default has no cross-process path.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True


def make_mesh(axes: Sequence[tuple[str, int]], devices: Sequence | None = None) -> Mesh:
    """A mesh with named axes; one size may be -1 for "all remaining devices".

    Args:
      axes: ((name, size), ...), e.g. (("data", 8), ("fsdp", -1)).
      devices: defaults to all devices of all processes.
    Returns:
      A `Mesh` with Auto axis types, so jit propagates shardings itself.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not axes:
        raise ValueError('The mesh needs at least one axis, e.g. (("data", -1),).')
    names = [a[0] for a in axes]
    sizes = [int(a[1]) for a in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"Mesh axis names must be unique, got {names}.")
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"Mesh sizes must be positive, with at most one -1; got {list(axes)}.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"Mesh {list(axes)}: {len(devices)} devices are not divisible by {known}."
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"Mesh {list(axes)} needs {math.prod(sizes)} devices, but {len(devices)} are "
            "available; use -1 for one axis to take the rest."
        )
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.make_mesh(sizes, names, axis_types=auto, devices=devices)


def batch_spec(mesh: Mesh, batch_axes: Sequence[str]) -> PartitionSpec:
    """PartitionSpec splitting dimension 0 over those of `batch_axes` the mesh has."""
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    if not axes:
        raise ValueError(
            f"None of the batch axes {tuple(batch_axes)} is an axis of the mesh {mesh.axis_names}."
        )
    return PartitionSpec(axes)


def batch_size_per_split(mesh: Mesh, batch_axes: Sequence[str]) -> int:
    """How many ways the batch is split (the batch size must be a multiple of it)."""
    batch_spec(mesh, batch_axes)  # checks that at least one batch axis exists
    return math.prod(mesh.shape[a] for a in batch_axes if a in mesh.axis_names)


def _fsdp_spec(shape, mesh: Mesh, axis: str, min_size: int) -> PartitionSpec:
    """Largest dimension divisible by the axis size, over that axis; small tensors replicate."""
    size = mesh.shape.get(axis, 1)  # A mesh without the axis (pure data parallel) replicates.
    if math.prod(shape) < min_size or size == 1:
        return PartitionSpec()
    dims = [d for d in np.argsort(shape, kind="stable")[::-1] if shape[d] % size == 0]
    if not dims:
        return PartitionSpec()
    return PartitionSpec(*(axis if d == dims[0] else None for d in range(len(shape))))


def _explicit_spec(name: str, shape, spec, mesh: Mesh) -> PartitionSpec:
    spec = tuple(spec)
    if len(spec) != len(shape):
        raise ValueError(
            f"Partition rule {spec} for {name!r} has {len(spec)} entries, but the tensor has "
            f"shape {tuple(shape)}."
        )
    for dim, axes in zip(shape, spec):
        parts = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
        if dim % parts:
            raise ValueError(
                f"Partition rule {spec} for {name!r}: dimension {dim} of {tuple(shape)} is not "
                f"divisible by the {parts} devices of {axes!r}."
            )
    return PartitionSpec(*spec)


def spec_for(
    name: str,
    shape: Sequence[int],
    rules: Sequence[Rule],
    mesh: Mesh,
    *,
    fsdp_axis: str = "fsdp",
    fsdp_min_size: int = 2**14,
) -> PartitionSpec:
    """The PartitionSpec of the first rule whose regex matches `name` (re.search)."""
    for pattern, rule in rules:
        if re.search(pattern, name):
            if rule == "replicate":
                return PartitionSpec()
            if rule == "fsdp":
                return _fsdp_spec(tuple(shape), mesh, fsdp_axis, fsdp_min_size)
            if isinstance(rule, (tuple, list)):
                return _explicit_spec(name, shape, rule, mesh)
            raise ValueError(
                f"Unknown partition rule {rule!r} for pattern {pattern!r}; valid: 'replicate', "
                "'fsdp', or a tuple with one mesh axis (or None) per dimension."
            )
    raise ValueError(
        f"No partition rule matches {name!r}; add a catch-all rule such as ('.*', 'replicate')."
    )


def _leaf_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def tree_shardings(tree, mesh: Mesh, rules: Sequence[Rule], **fsdp) -> Any:
    """A NamedSharding per leaf of `tree` (arrays or ShapeDtypeStructs), by name.

    Leaf names join the dict keys with "/"; a flat {"a/b/c": x} dict gives "a/b/c".
    """

    def one(path, leaf):
        return NamedSharding(mesh, spec_for(_leaf_name(path), np.shape(leaf), rules, mesh, **fsdp))

    return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(state, params: Mapping[str, Any], param_shardings: Mapping[str, Any], mesh):
    """Shardings of an optimizer state: a leaf stored under a parameter's name (momentum,
    Adam moments) is sharded like that parameter; the rest (step counts) is replicated.

    `params` and `param_shardings` are flat {"a/b/c": ...} dicts, as the trainable set.
    """
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(path, leaf):
        for key in reversed(path):
            name = getattr(key, "key", None)
            if name in params and np.shape(params[name]) == np.shape(leaf):
                return param_shardings[name]
        return replicated

    return jax.tree_util.tree_map_with_path(one, state)


def put(tree, shardings):
    """Places every leaf of `tree` with its sharding (host values or arrays on other devices)."""
    return jax.tree_util.tree_map(jax.device_put, tree, shardings)


def host_rows(global_batch_size: int) -> slice:
    """This process's rows of a global batch: process p of P loads rows [p B/P, (p+1) B/P)."""
    count, index = jax.process_count(), jax.process_index()
    if global_batch_size % count:
        raise ValueError(
            f"The global batch size {global_batch_size} is not divisible by the {count} processes."
        )
    per = global_batch_size // count
    return slice(index * per, (index + 1) * per)


def global_batch(local: Any, sharding: NamedSharding, global_batch_size: int) -> Any:
    """Host-local batch rows (`host_rows`) -> global jax.Arrays split by `sharding`."""

    def one(x):
        x = np.asarray(x)
        shape = (global_batch_size, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree_util.tree_map(one, local)


def describe(tree) -> dict[str, str]:
    """{"a/b": "(768, 3072) P(None, 'fsdp') -> (768, 768) per device"} of live arrays."""

    def one(path, x):
        shard = x.addressable_shards[0].data.shape
        return f"{tuple(x.shape)} {x.sharding.spec} -> {tuple(shard)} per device"

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_leaf_name(p): one(p, x) for p, x in flat}


def bytes_per_device(tree, shardings) -> int:
    """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs) under `shardings`."""
    leaves = jax.tree_util.tree_leaves(tree)
    specs = jax.tree_util.tree_leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    return int(
        sum(
            math.prod(s.shard_shape(tuple(x.shape))) * np.dtype(x.dtype).itemsize
            for x, s in zip(leaves, specs)
        )
    )


@dataclasses.dataclass(frozen=True)
class Partitioner:
    """Where a run's arrays live: the mesh, the parameter rules and the batch axes."""

    mesh: Mesh
    rules: tuple[Rule, ...] = ((".*", "fsdp"),)
    batch_axes: tuple[str, ...] = ("data", "fsdp")
    fsdp_axis: str = "fsdp"
    fsdp_min_size: int = 2**14

    @classmethod
    def from_config(cls, config, devices: Sequence | None = None) -> Partitioner:
        """From config.mesh and config.sharding (rules, batch_axes, fsdp_axis, fsdp_min_size)."""
        s = config.sharding
        return cls(
            make_mesh(tuple(tuple(a) for a in config.mesh), devices),
            tuple((pattern, _rule(rule)) for pattern, rule in s.rules),
            tuple(s.batch_axes),
            s.fsdp_axis,
            int(s.fsdp_min_size),
        )

    def params(self, tree) -> Any:
        """A NamedSharding per leaf of a parameter tree (or flat {"a/b": x} dict)."""
        return tree_shardings(
            tree, self.mesh, self.rules, fsdp_axis=self.fsdp_axis, fsdp_min_size=self.fsdp_min_size
        )

    @property
    def batch(self) -> NamedSharding:
        return NamedSharding(self.mesh, batch_spec(self.mesh, self.batch_axes))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def check_batch_size(self, size: int, what: str) -> None:
        """A batch must split evenly over the batch axes (and over the processes)."""
        ways = batch_size_per_split(self.mesh, self.batch_axes)
        if size % ways or size % jax.process_count():
            raise ValueError(
                f"{what}={size} must be a multiple of the {ways} batch shards of the mesh "
                f"{dict(self.mesh.shape)} (batch axes {self.batch_axes}) and of the "
                f"{jax.process_count()} processes."
            )

    def to_global(self, batch: Mapping[str, Any], global_size: int | None = None) -> Any:
        """A batch -> global sharded jax.Arrays.

        global_size None: `batch` is the whole global batch (identical numpy
        rows on every host) and each process hands over only its own rows
        (`host_rows`). An int: `batch` already holds just this process's rows of
        a global batch of that size (data.train_batches with rows=host_rows).
        On one host both are the whole batch.
        """
        size = len(jax.tree_util.tree_leaves(batch)[0])
        if global_size is None:
            rows = host_rows(size)
            local = jax.tree_util.tree_map(lambda x: np.asarray(x)[rows], batch)
            return global_batch(local, self.batch, size)
        rows = host_rows(global_size)
        if size != rows.stop - rows.start:
            raise ValueError(
                f"A batch of {size} rows on process {jax.process_index()}, but its part of a "
                f"global batch of {global_size} on {jax.process_count()} processes is "
                f"{rows.stop - rows.start} rows ({rows.start}:{rows.stop})."
            )
        return global_batch(batch, self.batch, global_size)


def _rule(rule):
    """Config values arrive as lists after a JSON round trip: explicit specs become tuples."""
    if isinstance(rule, str):
        return rule
    return tuple(tuple(a) if isinstance(a, list) else a for a in rule)
