"""Kernel slots: the per-slot unprivileged users kernels run as, and the pool that hands them out.

``gpumarket provider setup --slots N`` creates system users ``gpm-slot-0`` … ``gpm-slot-N-1``
(no home, no login shell, each in its own group). A root agent runs each lease's kernels as its
slot's user, so kernels never share a uid with each other or with the agent. A non-root agent has
no users to switch to: its slots carry only an index.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "SLOT_LOCK_DIR",
    "SLOT_USER_PREFIX",
    "KernelSlot",
    "SlotPool",
    "find_slot_users",
    "setup_commands",
]

SLOT_USER_PREFIX = "gpm-slot-"
SLOT_LOCK_DIR = Path("/run/gpumarket/slots")  # root's; hidden from kernels with /run


@dataclass(frozen=True)
class KernelSlot:
    index: int
    uid: int | None = None
    gid: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or self.index < 0:
            raise ConfigError(f"slot index must be an int >= 0, got {self.index!r}")
        if (self.uid is None) != (self.gid is None):
            raise ConfigError("a slot has both a uid and a gid, or neither")
        if self.uid is not None and self.uid <= 0:
            raise ConfigError(f"slot {self.index} must not run as root (uid {self.uid})")


def find_slot_users(
    entries: Iterable[pwd.struct_passwd] | None = None, prefix: str = SLOT_USER_PREFIX
) -> tuple[KernelSlot, ...]:
    """The slot users on this machine, by index (``gpm-slot-0``, ``gpm-slot-1``, …)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)")
    found = []
    for e in pwd.getpwall() if entries is None else entries:
        m = pattern.fullmatch(e.pw_name)
        if m and e.pw_uid > 0:
            found.append(KernelSlot(int(m.group(1)), e.pw_uid, e.pw_gid))
    return tuple(sorted(found, key=lambda s: s.index))


def setup_commands(
    count: int, existing: Iterable[KernelSlot], prefix: str = SLOT_USER_PREFIX
) -> list[list[str]]:
    """``useradd`` commands that create the slot users ``0..count-1`` not yet present."""
    if not isinstance(count, int) or not 1 <= count <= 1000:
        raise ConfigError(f"--slots must be between 1 and 1000, got {count!r}")
    have = {s.index for s in existing}
    useradd = shutil.which("useradd") or "useradd"
    return [
        [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent", "--user-group",
         "--shell", "/usr/sbin/nologin", "--comment", "gpumarket kernel slot", f"{prefix}{i}"]
        for i in range(count)
        if i not in have
    ]  # fmt: skip


class SlotPool:
    """Hands out the lowest free slot; a lease keeps its slot until it ends.

    With ``lock_dir``, a slot is also locked machine-wide (``flock`` on ``slot-<i>.lock``), so two
    agents on one machine never run kernels as the same user; a dead agent's locks go with it.
    """

    def __init__(self, slots: Iterable[KernelSlot], lock_dir: Path | None = None) -> None:
        self._free = sorted(slots, key=lambda s: s.index)
        self.size = len(self._free)
        self._lock_dir = lock_dir
        self._locks: dict[int, int] = {}
        if lock_dir is not None:
            lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def indices(cls, count: int) -> SlotPool:
        """A pool of uid-less slots (the agent cannot switch users)."""
        return cls(KernelSlot(i) for i in range(count))

    @classmethod
    def machine_wide(cls, slots: Iterable[KernelSlot]) -> SlotPool:
        return cls(slots, SLOT_LOCK_DIR)

    def _lock(self, slot: KernelSlot) -> bool:
        if self._lock_dir is None:
            return True
        fd = os.open(self._lock_dir / f"slot-{slot.index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False  # another agent on this machine runs a kernel as this user
        self._locks[slot.index] = fd
        return True

    def acquire(self) -> KernelSlot | None:
        for slot in self._free:
            if self._lock(slot):
                self._free.remove(slot)
                return slot
        return None

    def release(self, slot: KernelSlot) -> None:
        fd = self._locks.pop(slot.index, None)
        if fd is not None:
            os.close(fd)
        if slot not in self._free:
            self._free.append(slot)
            self._free.sort(key=lambda s: s.index)
