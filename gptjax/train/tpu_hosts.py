"""Is this process one worker of a multi-host Cloud TPU slice? Read without JAX's private code.

gptjax finds a slice's hosts through JAX's own cluster detection (`jax._src.clusters`, a
private module). When that import fails (a JAX release moved it), each host of a slice would
otherwise train alone on its own copy of the model, silently. This module looks for the
evidence itself, from what the TPU VM publishes and the same sources JAX reads:

- `TPU_WORKER_HOSTNAMES` / `TPU_PROCESS_ADDRESSES` (set on GKE TPU pods) listing several hosts;
- `MEGASCALE_NUM_SLICES` > 1 or `MEGASCALE_COORDINATOR_ADDRESS` (multi-slice runs);
- on a VM with TPU chips on its PCI bus (Google vendor id), the metadata server's
  `worker-network-endpoints` (set on every Cloud TPU VM, one entry per worker).
"""

from __future__ import annotations

import glob
import os
import urllib.request
from pathlib import Path

_GOOGLE_PCI_VENDOR = "0x1ae0"
_METADATA = "http://{host}/computeMetadata/v1/instance/attributes/{key}"
_METADATA_TIMEOUT = 5.0  # seconds; the metadata server answers in milliseconds on a TPU VM


def _hosts(value: str | None) -> int:
    return len([h for h in (value or "").split(",") if h.strip()])


def _tpu_chips_on_pci() -> int:
    """Google accelerator devices on the PCI bus (what JAX counts as TPU chips)."""
    count = 0
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            if Path(vendor).read_text().strip() == _GOOGLE_PCI_VENDOR:
                count += 1
        except OSError:
            continue
    return count


def _metadata(key: str) -> str:
    host = os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
    request = urllib.request.Request(
        _METADATA.format(host=host, key=key), headers={"Metadata-Flavor": "Google"}
    )
    with urllib.request.urlopen(request, timeout=_METADATA_TIMEOUT) as response:
        return response.read().decode()


def several_tpu_workers() -> str | None:
    """What shows this host is one of several TPU workers (a phrase for an error), else None.

    Raises OSError when this is a TPU VM whose metadata server cannot be read: then nobody can
    tell one host from many, and the caller must not guess.
    """
    for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):  # JAX's order
        if name in os.environ:  # GKE: authoritative, also when it lists one host
            hosts = _hosts(os.environ[name])
            return f"{name} lists {hosts} hosts" if hosts > 1 else None
    slices = os.environ.get("MEGASCALE_NUM_SLICES", "").strip()
    if slices.isdigit() and int(slices) > 1:
        return f"MEGASCALE_NUM_SLICES={slices}"
    if os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "MEGASCALE_COORDINATOR_ADDRESS is set (a multi-slice run)"
    if os.environ.get("TPU_SKIP_MDS_QUERY") is not None or not _tpu_chips_on_pci():
        return None  # no TPU chips here, or told not to ask the metadata server (as JAX is)
    workers = _hosts(_metadata("worker-network-endpoints"))
    return f"the TPU VM metadata lists {workers} workers" if workers > 1 else None
