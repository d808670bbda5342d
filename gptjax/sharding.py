"""Mesh, logical-to-mesh axis rules, sharded state creation and batch placement.

Mesh axes: `data` (pure data parallel: replicas), `fsdp` (data parallel whose replicas also
split the parameters and optimizer state), `tensor` (splits heads / mlp / vocab within a layer).
The batch is split over (`data`, `fsdp`). Model code only names logical axes; the rules table
(in the config) is the single place that decides where each lands.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gptjax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
# Multi-slice: how many slices (joined by the data-center network, DCN) an axis spans. Never
# `tensor`: its collectives run inside every matmul, which only a slice's ICI links can afford.
DCN_AXES = ("dcn_data", "dcn_fsdp")
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: tuple = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("act_embed", None),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("lora_rank", None),  # LoRA adapters' rank (small): replicated
    ("position", None),
    ("length", None),
)


def check_mesh_request(requested: Mapping[str, int]) -> dict[str, int]:
    """The requested sizes (a missing field is 1): per-slice axis sizes, each positive or -1
    with at most one -1, and `dcn_*` slice counts, each positive."""
    fields = (*MESH_AXES, *DCN_AXES)
    unknown = set(requested) - set(fields)
    if unknown:
        raise ConfigError(f"mesh: unknown axis {sorted(unknown)}; the fields are {fields}")
    sizes = {field: int(requested.get(field, 1)) for field in fields}
    free = [axis for axis in MESH_AXES if sizes[axis] == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh: at most one axis may be -1, got {free}")
    for axis in MESH_AXES:
        if sizes[axis] == 0 or sizes[axis] < -1:
            raise ConfigError(f"mesh.{axis} must be a positive integer or -1, got {sizes[axis]}")
    for field in DCN_AXES:
        if sizes[field] < 1:
            raise ConfigError(
                f"mesh.{field} must be a positive integer (the slices that axis spans), "
                f"got {sizes[field]}"
            )
    return sizes


@dataclasses.dataclass(frozen=True)
class MeshLayout:
    """A mesh as requested: each axis's size within one slice (ICI) and the number of slices
    it spans (DCN). The mesh's axis is their product, slice-major."""

    ici: dict[str, int]
    dcn: dict[str, int]  # every axis in MESH_AXES; `tensor` is always 1

    @property
    def shape(self) -> dict[str, int]:
        return {axis: self.ici[axis] * self.dcn[axis] for axis in MESH_AXES}

    @property
    def slices(self) -> int:
        return math.prod(self.dcn.values())

    def dcn_note(self) -> str:
        """What a log line adds after the mesh's shape: its slices, when there are several."""
        if self.slices == 1:
            return ""
        over = " ".join(f"{axis}={n}" for axis, n in self.dcn.items() if n > 1)
        within = " ".join(f"{axis}={size}" for axis, size in self.ici.items())
        return f" = {self.slices} slices over DCN ({over}) of {within} each"


def resolve_mesh_layout(requested: Mapping[str, int], device_count: int) -> MeshLayout:
    """Splits the devices into `dcn_data x dcn_fsdp` equal slices, then fills one `-1` axis
    with each slice's remaining devices; the per-slice product must equal a slice's devices."""
    sizes = check_mesh_request(requested)
    dcn = {axis: sizes.get(f"dcn_{axis}", 1) for axis in MESH_AXES}
    slices = math.prod(dcn.values())
    if device_count % slices:
        raise ConfigError(
            f"mesh.dcn_data x mesh.dcn_fsdp = {slices} slices cannot split the {device_count} "
            "devices evenly"
        )
    per_slice = device_count // slices
    where = f"of each of the {slices} slices" if slices > 1 else "available"
    ici = {axis: sizes[axis] for axis in MESH_AXES}
    free = [axis for axis, size in ici.items() if size == -1]
    fixed = math.prod(size for size in ici.values() if size != -1)
    if free:
        if per_slice % fixed:
            raise ConfigError(
                f"mesh: the fixed axes use {fixed} devices, which does not divide the "
                f"{per_slice} devices {where}"
            )
        ici[free[0]] = per_slice // fixed
    if math.prod(ici.values()) != per_slice:
        raise ConfigError(
            f"mesh {ici} needs {math.prod(ici.values())} devices but {per_slice} are {where}; "
            "set one axis to -1 to use the rest"
        )
    return MeshLayout(ici, dcn)


def resolve_mesh_shape(requested: Mapping[str, int], device_count: int) -> dict[str, int]:
    """The mesh's axis sizes (slices included) for `device_count` devices."""
    return resolve_mesh_layout(requested, device_count).shape


def check_slices_over_processes(slices: int, process_count: int) -> None:
    """A slice is one or more whole hosts (processes), as many per slice."""
    if slices > 1 and process_count > 1 and process_count % slices:
        raise ConfigError(
            f"mesh.dcn_data x mesh.dcn_fsdp = {slices} slices cannot split the {process_count} "
            f"processes evenly (each slice is whole hosts); use a divisor of {process_count}"
        )


def check_tensor_within_host(tensor: int, local_device_count: int, process_count: int) -> None:
    """The multi-host mesh rule: `tensor` splits each layer within one host, never across.

    Tensor parallelism exchanges activations inside every layer, which only the fast links
    within a host (or a TPU slice's ICI neighbours of one host) can afford; data and fsdp,
    which talk once per step or per layer's weights, span hosts.
    """
    if process_count > 1 and local_device_count % tensor:
        fits = [n for n in range(1, local_device_count + 1) if local_device_count % n == 0]
        raise ConfigError(
            f"mesh.tensor={tensor} must divide the {local_device_count} devices of each of the "
            f"{process_count} processes (tensor parallelism stays within a host; data and fsdp "
            f"span hosts): use mesh.tensor in {fits}"
        )


def make_mesh(requested: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor) in Auto (GSPMD-propagated) mode.

    With several processes the devices are laid out process-major: each process holds a
    contiguous block of the (data, fsdp) rows and whole `tensor` groups, so tensor never
    crosses hosts and a process's batch rows are one contiguous slice of the global batch.
    With several slices (`mesh.dcn_*`) each slice is laid out so, then placed slice-major.
    """
    devices = list(devices if devices is not None else jax.devices())
    layout = resolve_mesh_layout(requested, len(devices))
    shape = tuple(layout.shape[axis] for axis in MESH_AXES)
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    slices = slice_groups(devices, layout.slices)
    if len(slices) > 1:
        return Mesh(multislice_devices(slices, layout), MESH_AXES, axis_types=auto)
    if len({d.process_index for d in devices}) > 1:
        grid = process_major_devices(devices, layout.shape["tensor"])
        return Mesh(grid.reshape(shape), MESH_AXES, axis_types=auto)
    if devices == list(jax.devices()):
        # make_mesh orders devices for the physical topology (ICI rings on TPU).
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def _grouped(devices: Sequence, key: Callable) -> list[list]:
    groups: dict[int, list] = {}
    for device in devices:
        groups.setdefault(key(device), []).append(device)
    return [groups[index] for index in sorted(groups)]


def slice_groups(devices: Sequence, count: int) -> list[list]:
    """The devices of each slice, in slice order.

    TPU devices carry `slice_index` (a multislice job numbers its slices), and the request
    must match it. Elsewhere (CPU processes all report slice 0; GPUs have no TPU slices)
    `count` slices of consecutive processes stand in, so the same layout runs, and is
    tested, everywhere.
    """
    if devices[0].platform == "tpu":
        groups = _grouped(devices, lambda d: getattr(d, "slice_index", 0))  # none: one slice
        if len(groups) != count:
            raise ConfigError(
                f"mesh.dcn_data x mesh.dcn_fsdp = {count} slice(s) but the devices form "
                f"{len(groups)} TPU slice(s) (their slice_index); make the product {len(groups)}"
            )
        return groups
    if count == 1:
        return [list(devices)]
    processes = _grouped(devices, lambda d: d.process_index)
    if len(processes) % count:
        raise ConfigError(
            f"mesh.dcn_data x mesh.dcn_fsdp = {count} slices: without TPU slices, consecutive "
            f"processes form them, and {len(processes)} process(es) cannot form {count}"
        )
    per = len(processes) // count
    return [sum(processes[i * per : (i + 1) * per], []) for i in range(count)]


def multislice_devices(slices: Sequence[Sequence], layout: MeshLayout) -> np.ndarray:
    """The device grid of a multi-slice mesh: along each axis the slice index is the major
    part (the layout of `mesh_utils.create_hybrid_device_mesh`), so each slice's devices are
    one contiguous block and only the `dcn_*` axes' collectives cross the slower network.

    Each slice's own grid is the one-slice layout (process-major over its hosts, else
    ordered for its topology), so tensor groups stay within a host here too.
    """
    ici = tuple(layout.ici[axis] for axis in MESH_AXES)
    dcn = tuple(layout.dcn[axis] for axis in MESH_AXES)
    stacked = np.empty(dcn + ici, dtype=object)
    for number, (index, devices) in enumerate(zip(np.ndindex(*dcn), slices, strict=True)):
        if len(devices) != math.prod(ici):
            raise ConfigError(
                f"the slices differ in size: slice {number} has {len(devices)} devices, the "
                f"mesh needs {math.prod(ici)} in each"
            )
        stacked[index] = _slice_grid(devices, ici)
    # [dcn_data, dcn_fsdp, 1, data, fsdp, tensor] -> [dcn_data * data, dcn_fsdp * fsdp, tensor]
    shape = tuple(d * i for d, i in zip(dcn, ici, strict=True))
    return stacked.transpose(0, 3, 1, 4, 2, 5).reshape(shape)


def _slice_grid(devices: Sequence, ici: tuple[int, ...]) -> np.ndarray:
    if len({d.process_index for d in devices}) > 1:
        return process_major_devices(devices, ici[-1]).reshape(ici)
    try:
        return mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError, AttributeError):
        return np.asarray(devices, dtype=object).reshape(ici)  # no topology known


def process_major_devices(devices: Sequence, tensor: int) -> np.ndarray:
    """[processes, local // tensor, tensor] devices: each process's devices in one block,
    ordered within the host for its topology (TPU) so `tensor` groups are ICI neighbours."""
    by_process: dict[int, list] = {}
    for device in devices:
        by_process.setdefault(device.process_index, []).append(device)
    counts = {len(local) for local in by_process.values()}
    if len(counts) != 1:
        raise ConfigError(f"every process must have as many devices; got {sorted(counts)}")
    local_count = counts.pop()
    check_tensor_within_host(tensor, local_count, len(by_process))
    blocks = []
    for index in sorted(by_process):
        local = by_process[index]
        block_shape = (local_count // tensor, tensor)
        try:
            block = mesh_utils.create_device_mesh(
                block_shape, local, allow_split_physical_axes=True
            )
        except (ValueError, NotImplementedError, AssertionError, AttributeError):
            block = np.asarray(local, dtype=object).reshape(block_shape)  # no topology known
        blocks.append(block)
    return np.stack(blocks)


def logical_to_spec(
    names: Sequence[str | None],
    rules: Rules,
    mesh_shape: Mapping[str, int],
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec.

    A mesh axis is used at most once per array (the first dimension to claim it wins), and a
    dimension that the mesh axes would not divide evenly stays replicated.
    """
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(names):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used and mesh_shape.get(a, 1) > 1)
        if shape is not None and axes and shape[dim] % math.prod(mesh_shape[a] for a in axes):
            axes = ()
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else (axes or None))
    return PartitionSpec(*spec)


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def state_shardings(abstract_state, mesh: Mesh, rules: Rules):
    """A NamedSharding for every leaf of an (abstract) State; unannotated leaves replicate."""

    def leaf_sharding(leaf):
        value = leaf.get_value() if _is_variable(leaf) else leaf
        names = leaf.get_metadata().get("out_sharding") if _is_variable(leaf) else None
        if names is None:
            return NamedSharding(mesh, PartitionSpec())
        spec = logical_to_spec(names, rules, dict(mesh.shape), value.shape)
        return NamedSharding(mesh, spec)

    return jax.tree.map(leaf_sharding, abstract_state, is_leaf=_is_variable)


def split_over_data(named: NamedSharding, shape: Sequence[int]) -> NamedSharding:
    """`named` with its first dimension that is not split yet and that the `data` axis divides
    also split over `data`; unchanged when `data` is 1, already used, or divides no dimension.

    For ZeRO-1: the optimizer's moments live split over the data-parallel replicas, so each
    replica updates only its share (the parameters stay whole, gathered after the update).
    """
    size = named.mesh.shape.get("data", 1)
    spec = tuple(named.spec) + (None,) * (len(shape) - len(named.spec))
    used = {a for entry in spec if entry for a in ((entry,) if isinstance(entry, str) else entry)}
    if size == 1 or "data" in used:
        return named
    for dim, entry in enumerate(spec):
        if entry is None and shape[dim] % size == 0:
            new = spec[:dim] + ("data",) + spec[dim + 1 :]
            return NamedSharding(named.mesh, PartitionSpec(*new))
    return named


def shard_optimizer_over_data(abstract_state, shardings):
    """A TrainState's shardings with its `opt_state` leaves split over `data` (ZeRO-1)."""
    shapes = jax.tree.leaves(abstract_state.opt_state)
    named = jax.tree.leaves(shardings.opt_state, is_leaf=lambda x: isinstance(x, NamedSharding))
    split = [split_over_data(n, s.shape) for n, s in zip(named, shapes, strict=True)]
    treedef = jax.tree.structure(
        shardings.opt_state, is_leaf=lambda x: isinstance(x, NamedSharding)
    )
    return shardings.replace(opt_state=jax.tree.unflatten(treedef, split))


def plan_state(
    create: Callable[[], object], mesh: Mesh, rules: Rules, *, shard_optimizer: bool = False
):
    """(abstract target, shardings) of `create()` without computing anything.

    The target's leaves are ShapeDtypeStructs carrying their NamedSharding: what Orbax
    needs to restore a checkpoint directly onto this mesh. `shard_optimizer` (a TrainState
    only): its optimizer state also split over `data` (`shard_optimizer_over_data`).
    """
    abstract_state = jax.eval_shape(create)
    shardings = state_shardings(abstract_state, mesh, rules)
    if shard_optimizer:
        shardings = shard_optimizer_over_data(abstract_state, shardings)
    leaves, treedef = jax.tree.flatten(abstract_state)
    named = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    target = [
        jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
        for leaf, sharding in zip(leaves, named, strict=True)
    ]
    return jax.tree.unflatten(treedef, target), shardings


def sharded_init(
    create: Callable[[], object], mesh: Mesh, rules: Rules, *, shard_optimizer: bool = False
):
    """Runs `create()` (a pytree that may hold nnx Variables) abstractly, then directly sharded.

    Returns (state, shardings). Nothing full-size is ever placed on one device: `create` is
    jitted with `out_shardings`, so each device computes only its own shard.
    """
    _, shardings = plan_state(create, mesh, rules, shard_optimizer=shard_optimizer)
    return jax.jit(create, out_shardings=shardings)(), shardings


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) dimension split over data and fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch_from_local(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
    """Assembles the global batch from this process's rows (process-aware: works multi-host)."""
    return {
        name: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(value)), value)
        for name, value in local_batch.items()
    }


def data_parallel_size(mesh_shape: Mapping[str, int]) -> int:
    return int(mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1))


def sharding_table(state, shardings) -> list[tuple[str, tuple[int, ...], PartitionSpec]]:
    """(path, shape, spec) for every array leaf: the table written at the start of a run."""
    rows = []
    flat_state = jax.tree_util.tree_leaves_with_path(state, is_leaf=_is_variable)
    flat_sharding = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    for (path, leaf), named in zip(flat_state, flat_sharding, strict=True):
        value = leaf.get_value() if _is_variable(leaf) else leaf
        rows.append((jax.tree_util.keystr(path), tuple(value.shape), named.spec))
    return rows


def is_split(spec: PartitionSpec) -> bool:
    return any(axis is not None for axis in spec)
