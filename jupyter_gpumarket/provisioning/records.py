"""Records of running remote kernels, so a restarted Jupyter server can re-adopt them.

One JSON file per kernel id in ``<jupyter runtime dir>/gpumarket-kernels/``, mode 0600 (it holds
the kernel's HMAC key and the provider token, like a Jupyter connection file holds its key).
Written when a remote kernel is running, removed when it is shut down on purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from jupyter_gpumarket.exceptions import ConfigError

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


def _path(kernel_id: str) -> Path:
    if not kernel_id or "/" in kernel_id or kernel_id.startswith("."):
        raise ConfigError(f"{kernel_id!r} is not a kernel id")
    return records_dir() / f"{kernel_id}.json"


def save(record: KernelRecord) -> None:
    path = _path(record.kernel_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(record), f)
    os.replace(tmp, path)


def load(kernel_id: str) -> KernelRecord | None:
    path = _path(kernel_id)
    try:
        data = json.loads(path.read_text())
        names = {f.name for f in fields(KernelRecord)}
        return KernelRecord(**{k: v for k, v in data.items() if k in names})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"kernel record {path} is unreadable ({exc}); delete it with "
            f"`gpumarket kernels forget {kernel_id}`"
        ) from None


def load_all() -> list[KernelRecord]:
    out = []
    for path in sorted(records_dir().glob("*.json")):
        with contextlib.suppress(ConfigError):
            record = load(path.stem)
            if record is not None:
                out.append(record)
    return out


def forget(kernel_id: str) -> bool:
    try:
        _path(kernel_id).unlink()
        return True
    except FileNotFoundError:
        return False
