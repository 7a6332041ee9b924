"""The demo's child processes: each in its own session, stopped in order, none left behind.

Every child starts in a new session (its own process group), so a terminal's Ctrl-C reaches only
the demo, which then stops its children in the order that lets them finish their work (JupyterLab
first: its remote kernels settle with providers that still run; then the providers: they
unpublish their offers on the chain that still runs). Whatever a child left in its group after it
exited (or did not exit in time) is killed with the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "Children"]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path | None

    @property
    def pgid(self) -> int:
        return self.proc.pid  # a session leader's group id is its pid


@dataclass
class Children:
    """Started children, in start order; ``stop_all`` stops them in ``stages``."""

    items: list[Child] = field(default_factory=list)

    def start(
        self, name: str, cmd: Sequence[str], *, env: dict[str, str], log: Path | None
    ) -> Child:
        if log is None:
            proc = subprocess.Popen(list(cmd), env=env, start_new_session=True)
        else:
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
        child = Child(name, proc, log)
        self.items.append(child)
        return child

    def exited(self) -> Child | None:
        """The first child that has exited, if any."""
        return next((c for c in self.items if c.proc.poll() is not None), None)

    def stop_all(self, stages: Sequence[Sequence[str]], timeout: float = 30.0) -> None:
        """SIGTERM the children named in each stage (then the rest), wait up to ``timeout`` per
        stage, SIGKILL what is left, and finally kill every child's whole process group."""
        named = {n for stage in stages for n in stage}
        rest = [c.name for c in self.items if c.name not in named]
        for stage in [*stages, rest]:
            group = [c for c in self.items if c.name in stage]
            for child in group:
                if child.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                if child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait()
        for child in self.items:
            _kill_group(child.pgid)


def _kill_group(pgid: int) -> None:
    """SIGKILL whatever still runs in process group ``pgid`` (a child's leftovers)."""
    if pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
