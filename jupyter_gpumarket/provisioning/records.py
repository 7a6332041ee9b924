"""Records of running remote kernels, so a restarted Jupyter server can re-adopt them.

One JSON file per kernel id in ``<jupyter runtime dir>/gpumarket-kernels/``, mode 0600 (it holds
the kernel's HMAC key and the provider token, like a Jupyter connection file holds its key).
Written when a remote kernel is running, removed when it is shut down on purpose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from jupyter_gpumarket.exceptions import ConfigError
from jupyter_gpumarket.provisioning.record_store import RecordStore

__all__ = ["KernelRecord", "forget", "load", "load_all", "records_dir", "save"]


def records_dir() -> Path:
    return Path(jupyter_runtime_dir()) / "gpumarket-kernels"


@dataclass(frozen=True)
class KernelRecord:
    kernel_id: str
    kernel_name: str
    provider_url: str
    tls_fingerprint: str
    token: str
    lease: str
    key: str
    cwd: str | None
    connection_file: str | None
    server_pid: int
    created: float
    tunnel_socket: str | None = None  # the kernel's tunnel process (re-adopted by connecting)
    tunnel_pid: int | None = None

    def __post_init__(self) -> None:
        for name in ("kernel_id", "kernel_name", "provider_url", "lease", "key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"kernel record field {name!r} is missing or not a string")

    def public(self) -> dict[str, Any]:
        """What `gpumarket kernels list` shows: everything but the secrets."""
        data = asdict(self)
        data.pop("token")
        data.pop("key")
        return data


_store = RecordStore(
    KernelRecord,
    records_dir,
    "kernel record",
    lambda kernel_id: f"delete it with `gpumarket kernels forget {kernel_id}`",
)
save = _store.save
load = _store.load
load_all = _store.load_all
forget = _store.forget
