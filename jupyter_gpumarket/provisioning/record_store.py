"""One JSON file per kernel id in a directory of the renter's: the store behind the kernel
records (provisioning.records) and the paid-lease state (provisioning.paid_state).

Files are mode 0600 in a 0700 directory (they hold a kernel's HMAC key, a provider token, an
encrypted session key), written atomically and durably (jupyter_gpumarket.statefile). A kernel
id is a file name, never a path. An unreadable file is a ConfigError saying how to get rid of it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from jupyter_gpumarket import statefile
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["RecordStore"]

T = TypeVar("T")


class RecordStore(Generic[T]):
    """Dataclass instances of ``cls`` keyed by their ``kernel_id``."""

    def __init__(
        self,
        cls: type[T],
        directory: Callable[[], Path],
        what: str,
        remedy: Callable[[str], str],
    ) -> None:
        self.cls = cls
        self.directory = directory  # a function: the runtime dir may change (tests, env)
        self.what = what  # "kernel record": how messages name one file
        self.remedy = remedy  # kernel id -> what to do about an unreadable file

    def path(self, kernel_id: str) -> Path:
        if not kernel_id or "/" in kernel_id or kernel_id.startswith("."):
            raise ConfigError(f"{kernel_id!r} is not a kernel id")
        return self.directory() / f"{kernel_id}.json"

    def save(self, record: T) -> None:
        path = self.path(record.kernel_id)  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        statefile.write_json(path, asdict(record))  # type: ignore[call-overload]

    def load(self, kernel_id: str) -> T | None:
        path = self.path(kernel_id)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            names = {f.name for f in fields(self.cls)}  # type: ignore[arg-type]
            return self.cls(**{k: v for k, v in data.items() if k in names})
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{self.what} {path} is unreadable ({exc}); {self.remedy(kernel_id)}"
            ) from None

    def load_all(self) -> list[T]:
        """Every readable record; unreadable ones are left for their remedy."""
        out = []
        for path in sorted(self.directory().glob("*.json")):
            with contextlib.suppress(ConfigError):
                record = self.load(path.stem)
                if record is not None:
                    out.append(record)
        return out

    def forget(self, kernel_id: str) -> bool:
        try:
            self.path(kernel_id).unlink()
            return True
        except FileNotFoundError:
            return False
