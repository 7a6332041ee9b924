"""The serving agent's pid file, ``<state_dir>/agent.pid``, locked while the agent runs.

The lock (``flock``), not the pid, says whether an agent is running: the kernel drops it when
the process ends, however it ends (SIGKILL included), so a pid the system has since handed to
another program is never taken for the agent, and a second agent on the same state dir (same
offer, same ledger) is refused. The descriptor is not inherited by kernels (PEP 446), so a
kernel that outlives its agent does not keep the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from jupyter_gpumarket.exceptions import AgentError

__all__ = [
    "PID_FILE",
    "AgentPid",
    "StopOutcome",
    "hold_pid_file",
    "running_pid",
    "stop_agent",
]

PID_FILE = "agent.pid"


def _locked_elsewhere(fd: int) -> bool:
    """True when another process holds the lock on ``fd``'s file (ours is left unlocked)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


@contextlib.contextmanager
def hold_pid_file(state_dir: Path) -> Iterator[Path]:
    """Write this process's pid into ``state_dir/agent.pid`` and lock it; AgentError when
    another agent holds it. The file is removed when the block ends, the lock goes with the
    process. Called by ``provider serve`` once its signal handlers are in place."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / PID_FILE
    deadline = time.monotonic() + 1.0  # `provider stop` holds a stale file for a moment
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise AgentError(
                f"an agent is already serving from {state_dir} (pid {pid}): stop it with "
                f"`gpumarket provider stop --state-dir {state_dir}` or pick another --state-dir"
            ) from None
        if _same_file(fd, path):  # not unlinked meanwhile by a `provider stop`
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        if _same_file(fd, path):
            path.unlink()
        # The descriptor stays open on purpose: its lock goes when the process has exited,
        # which is what `provider stop` waits for (a new agent meanwhile makes a new file).


def running_pid(state_dir: Path) -> int | None:
    """The pid of the agent serving from ``state_dir``; None when none is."""
    try:
        fd = os.open(state_dir / PID_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _read_pid(fd) if _locked_elsewhere(fd) else None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class AgentPid:
    """What ``provider stop`` found in a state dir."""

    path: Path
    pid: int | None
    running: bool


class StopOutcome(Enum):
    NOT_RUNNING = "not running"
    STALE = "stale pid file removed"
    STOPPED = "stopped"
    STILL_RUNNING = "still running"


def stop_agent(
    state_dir: Path,
    *,
    timeout: float = 30.0,
    progress: Callable[[str], None] = print,
    every: float = 5.0,
) -> tuple[StopOutcome, AgentPid]:
    """SIGTERM the agent serving from ``state_dir`` and wait (at most ``timeout`` s) until it has
    exited; the outcome and what was found. ``progress`` gets a line every ``every`` s."""
    path = state_dir / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return StopOutcome.NOT_RUNNING, AgentPid(path, None, running=False)
    try:
        pid = _read_pid(fd)
        try:
            # Held while we remove it; an agent starting meanwhile retries on a fresh file.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # an agent holds it
        else:
            # Nobody held it: the agent died without cleaning up (SIGKILL, power loss).
            if _same_file(fd, path):
                path.unlink()
            return StopOutcome.STALE, AgentPid(path, pid, running=False)
        found = AgentPid(path, pid, running=True)
        if pid is None:  # locked but not yet written: an agent in its first milliseconds
            time.sleep(0.2)
            pid = _read_pid(fd)
            if pid is None:
                raise AgentError(f"{path} is locked but holds no pid; try again in a moment")
            found = AgentPid(path, pid, running=True)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # exited between the check and the signal: the lock is going away too
        except PermissionError as exc:
            raise AgentError(
                f"cannot signal the agent (pid {pid}): {exc}; run `provider stop` as its user"
            ) from exc
        start = time.monotonic()
        next_note = start + every
        while _locked_elsewhere(fd):
            now = time.monotonic()
            if now - start >= timeout:
                return StopOutcome.STILL_RUNNING, found
            if now >= next_note:
                waited = int(now - start)
                progress(f"waiting for the agent (pid {pid}) to end its leases ... {waited} s")
                next_note += every
            time.sleep(0.1)
        return StopOutcome.STOPPED, found
    finally:
        os.close(fd)
