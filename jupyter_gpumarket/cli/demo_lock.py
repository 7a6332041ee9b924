"""One `gpumarket demo` per demo home: an exclusive lock taken before anything is touched.

A second demo on the same home would rewrite the running one's network profile, delete its
providers' ready files and start a chain of its own: instead it fails at once, naming the running
demo's pid and port. The lock is ``flock`` on ``<home>/demo.lock`` (released by the kernel when the
holder exits, even on SIGKILL, so a crashed demo never blocks the next one); the file's content
(pid, port) is only what the message shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["LOCK_NAME", "check_port_free", "demo_lock"]

LOCK_NAME = "demo.lock"
_MAX_LOCK_BYTES = 4096


def _holder(fd: int) -> dict[str, object]:
    """What the running demo wrote into its lock file (best effort: it is only shown)."""
    with contextlib.suppress(OSError, ValueError):
        data = os.pread(fd, _MAX_LOCK_BYTES, 0)
        info = json.loads(data.decode())
        if isinstance(info, dict):
            return info
    return {}


@contextlib.contextmanager
def demo_lock(home: Path, *, port: int | None) -> Iterator[Path]:
    """Hold ``<home>/demo.lock`` for the demo's lifetime; ConfigError at once when another
    demo holds it. Nothing else in ``home`` is touched before the lock is ours."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / LOCK_NAME
    # no O_TRUNC: the running demo's pid stays readable until we hold the lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _holder(fd)
            pid, their_port = info.get("pid", "?"), info.get("port")
            where = f"JupyterLab on port {their_port}" if their_port else "no JupyterLab"
            raise ConfigError(
                f"a gpumarket demo is already running from {home} (pid {pid}, {where}); "
                "use that one, stop it with Ctrl-C in its terminal, or start another with its "
                "own --home and --port"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "port": port}).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def check_port_free(ip: str, port: int) -> None:
    """ConfigError when ``ip:port`` is taken (by anything: another Jupyter, another demo)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # what jupyter_server does when it binds: a port in TIME_WAIT counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {ip} is in use ({exc.strerror}): is another JupyterLab or "
                "gpumarket demo running? Stop it, or pass --port with a free one"
            ) from None
