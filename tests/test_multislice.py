"""Multi-slice (DCN) meshes: `mesh.dcn_*` slices, each laid out like a one-slice mesh.

The device grids are built from fake device lists (no Mesh is made from them): TPU-like ones
carry `slice_index` (and coords, for mesh_utils' topology ordering), CPU-like ones only
`process_index`, where consecutive processes stand in for slices. The 2-process loopback run
is `test_two_processes_as_two_slices_train_like_one` in tests/test_multihost.py.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from jax.experimental import mesh_utils

from gptjax.config import apply_overrides, load_config_file, validate
from gptjax.errors import ConfigError
from gptjax.sharding import (
    multislice_devices,
    resolve_mesh_layout,
    resolve_mesh_shape,
    slice_groups,
)
from gptjax.train.memory_plan import plan_memory
from gptjax.train.memory_report import report_lines

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.py"


def _cpu_devices(processes: int, local: int) -> list:
    """Listed interleaved across processes, as a topology order might list them."""
    return [
        SimpleNamespace(id=p * 100 + d, process_index=p, platform="cpu", device_kind="cpu")
        for d in range(local)
        for p in range(processes)
    ]


def _tpu_devices(slices: int, hosts: int, side: int = 2) -> list:
    """TPU v5e-like slices of side x side chips, each chip one device, split row-wise over
    `hosts` processes per slice; listed slice-interleaved so grouping has work to do."""
    devices = []
    for y in range(side):
        for x in range(side):
            for s in range(slices):
                host = s * hosts + y * hosts // side
                devices.append(
                    SimpleNamespace(
                        id=s * 1000 + y * side + x, slice_index=s, process_index=host,
                        coords=(x, y, 0), core_on_chip=0, platform="tpu",
                        device_kind="TPU v5 lite",
                    )
                )  # fmt: skip
    return devices


def _ids(grid) -> list:
    return [[d.id for d in row] for row in np.asarray(grid).reshape(grid.shape[0], -1)]


def test_the_mesh_axis_is_slices_times_the_per_slice_size():
    layout = resolve_mesh_layout({"data": 1, "fsdp": 16, "dcn_data": 2}, 32)
    assert layout.ici == {"data": 1, "fsdp": 16, "tensor": 1}
    assert layout.shape == {"data": 2, "fsdp": 16, "tensor": 1} and layout.slices == 2
    assert layout.dcn_note() == " = 2 slices over DCN (data=2) of data=1 fsdp=16 tensor=1 each"
    # -1 fills one slice's remaining devices, not the whole machine's
    four = {"data": -1, "tensor": 2, "dcn_data": 2, "dcn_fsdp": 2}
    assert resolve_mesh_shape(four, 32) == {"data": 8, "fsdp": 2, "tensor": 2}
    assert resolve_mesh_layout({"data": -1}, 8).dcn_note() == ""  # one slice: as before


@pytest.mark.parametrize(
    "request_, devices, message",
    [
        ({"dcn_data": 3}, 8, "= 3 slices cannot split the 8 devices evenly"),
        ({"data": 8, "dcn_data": 2}, 8, "needs 8 devices but 4 are of each of the 2 slices"),
        ({"data": -1, "fsdp": 3, "dcn_fsdp": 2}, 8, "does not divide the 4 devices of each"),
        ({"dcn_data": 0}, 8, "mesh.dcn_data must be a positive integer"),
        ({"dcn_fsdp": -1}, 8, "mesh.dcn_fsdp must be a positive integer"),
        ({"dcn_tensor": 2}, 8, r"unknown axis \['dcn_tensor'\]"),  # tensor never spans DCN
    ],
)
def test_impossible_slice_requests_are_one_line_config_errors(request_, devices, message):
    with pytest.raises(ConfigError, match=message):
        resolve_mesh_layout(request_, devices)


def test_validate_refuses_slices_that_are_not_whole_processes():
    config = load_config_file(TINY)
    apply_overrides(config, ["mesh.dcn_data=4"])
    with pytest.raises(ConfigError, match="4 slices cannot split the 2 processes evenly"):
        validate(config, device_count=8, process_count=2, local_device_count=4)
    derived = validate(config, device_count=8, process_count=4, local_device_count=2)
    assert derived["mesh_shape"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert derived["mesh_layout"].ici == {"data": 2, "fsdp": 1, "tensor": 1}


def test_slices_of_different_sizes_are_refused():
    devices = _tpu_devices(slices=2, hosts=1)[:-1]  # slice 1 lost a chip: 4 + 3 devices
    layout = resolve_mesh_layout({"data": -1, "dcn_data": 2}, 8)
    with pytest.raises(ConfigError, match="slice 1 has 3 devices, the mesh needs 4 in each"):
        multislice_devices(slice_groups(devices, 2), layout)


def test_slices_come_from_slice_index_and_must_match_the_request():
    devices = _tpu_devices(slices=2, hosts=1)
    groups = slice_groups(devices, 2)
    assert [{d.slice_index for d in group} for group in groups] == [{0}, {1}]
    assert [len(group) for group in groups] == [4, 4]
    with pytest.raises(ConfigError, match="= 1 slice.* but the devices form 2 TPU slice"):
        slice_groups(devices, 1)  # forgetting mesh.dcn_data on a multislice job
    with pytest.raises(ConfigError, match="= 4 slice.* but the devices form 2 TPU slice"):
        slice_groups(devices, 4)


def test_without_slice_index_consecutive_processes_form_the_slices():
    devices = _cpu_devices(processes=4, local=2)
    for device in devices:
        device.slice_index = 0  # what multi-process CPU devices report
    groups = slice_groups(devices, 2)
    assert [sorted({d.process_index for d in g}) for g in groups] == [[0, 1], [2, 3]]
    with pytest.raises(ConfigError, match="and 3 process.* cannot form 2$"):
        slice_groups(_cpu_devices(processes=3, local=2), 2)
    with pytest.raises(ConfigError, match="and 1 process.* cannot form 2$"):
        slice_groups(_cpu_devices(processes=1, local=8), 2)


@pytest.mark.parametrize("dcn_data, dcn_fsdp", [(2, 1), (1, 2), (2, 2)])
def test_each_slice_is_one_contiguous_block_along_the_dcn_axes(dcn_data, dcn_fsdp):
    slices = dcn_data * dcn_fsdp
    request = {"data": 2, "fsdp": 2, "tensor": 2, "dcn_data": dcn_data, "dcn_fsdp": dcn_fsdp}
    devices = _cpu_devices(processes=slices * 2, local=4)
    layout = resolve_mesh_layout(request, len(devices))
    grid = multislice_devices(slice_groups(devices, slices), layout)
    assert grid.shape == (2 * dcn_data, 2 * dcn_fsdp, 2)
    for i in range(dcn_data):
        for j in range(dcn_fsdp):
            block = grid[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            owners = {d.process_index // 2 for d in block.flat}  # 2 processes per slice
            assert owners == {i * dcn_fsdp + j}  # the slice at DCN position (i, j), and only it
    for group in grid.reshape(-1, 2):  # a tensor group never crosses a host
        assert len({d.process_index for d in group}) == 1
    assert len({d.id for d in grid.flat}) == grid.size


def test_one_host_slices_are_laid_out_as_create_hybrid_device_mesh_does():
    """Slices of one process: the grid is mesh_utils' hybrid mesh, topology order included."""
    for devices in (_tpu_devices(slices=2, hosts=1), _cpu_devices(processes=2, local=4)):
        for device in devices:
            device.slice_index = getattr(device, "slice_index", device.process_index)
        layout = resolve_mesh_layout({"data": 1, "fsdp": 4, "dcn_data": 2}, 8)
        ours = multislice_devices(slice_groups(devices, 2), layout)
        theirs = mesh_utils.create_hybrid_device_mesh(
            (1, 4, 1), (2, 1, 1), devices, allow_split_physical_axes=True
        )
        assert _ids(ours) == _ids(theirs)


def test_multi_host_slices_keep_each_hosts_batch_rows_contiguous():
    devices = _tpu_devices(slices=2, hosts=2)  # 2 slices of 2x2 chips, 2 hosts of 2 chips each
    layout = resolve_mesh_layout({"data": -1, "tensor": 2, "dcn_data": 2}, 8)
    grid = multislice_devices(slice_groups(devices, 2), layout)
    rows = [{d.process_index for d in row.flat} for row in grid]
    assert rows == [{0}, {1}, {2}, {3}]  # batch rows: slice-major, then host-major


def test_dry_run_shows_the_slices():
    config = load_config_file(TINY)
    apply_overrides(config, ["mesh.dcn_data=2", "model.num_layers=1"])
    lines = report_lines(plan_memory(config, device_count=8, compile=False))
    assert lines[0].startswith(
        "dry run: mesh data=8 fsdp=1 tensor=1 = 2 slices over DCN (data=2) of data=4 fsdp=1 "
        "tensor=1 each over 8 cpu device(s)"
    ), lines[0]
