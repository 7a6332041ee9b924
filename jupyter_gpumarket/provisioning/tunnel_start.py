"""Starting a tunnel process (:mod:`.tunnelproc`): where its control socket lives, the command,
waiting for its ``ready``; and whether kernels get one (GPUMARKET_TUNNEL_PROCESS)."""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from jupyter_gpumarket.exceptions import TunnelError

__all__ = ["START_TIMEOUT", "process_mode_env", "socket_path", "start_process"]

_SUN_PATH_MAX = 100
START_TIMEOUT = 30.0


def process_mode_env() -> bool | None:
    """GPUMARKET_TUNNEL_PROCESS=1/0 (None when unset: the trait decides)."""
    value = os.environ.get("GPUMARKET_TUNNEL_PROCESS")
    if value is None or value == "":
        return None
    return value.lower() in ("1", "true", "yes", "on")


def socket_path(name: str) -> Path:
    """A fresh control socket path in a 0700 folder of Jupyter's runtime dir."""
    folder = Path(jupyter_runtime_dir()) / "gpumarket-tunnels"
    base = f"{(name or 'kernel')[:8]}-{secrets.token_hex(4)}.sock"
    if len(str(folder / base)) > _SUN_PATH_MAX:  # a Unix socket path holds ~107 bytes
        folder = Path(tempfile.mkdtemp(prefix="gpumarket-tun-"))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder / base


def start_process(name: str, grace: float) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a tunnel process and wait (blocking, bounded) until its socket listens."""
    path = socket_path(name)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_gpumarket.provisioning.tunnelproc",
            "--socket",
            str(path),
            "--grace",
            str(grace),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C to the server's terminal is not the kernel's end
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line.strip() != b"ready":
        proc.kill()
        proc.wait()
        raise TunnelError(
            f"the tunnel process did not start (exit code {proc.poll()}): see the server's "
            "log, or set GPUMARKET_TUNNEL_PROCESS=0 to run the tunnel in the server"
        )
    return proc, path
