"""What users do today for a remote kernel: its five ZMQ ports forwarded with ``ssh -L``.

:class:`Sshd` runs Debian's OpenSSH server on a free loopback port as this process's child,
with a throwaway host key and user key in a temporary directory (nothing installed, no
system configuration read). :class:`SshKernel` starts an ipykernel the way remote_ikernel
does: one ``ssh -L ... host python -m ipykernel_launcher -f conn.json`` whose forwards carry
the five ports; the client connects to the local ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["SSHD", "SshKernel", "Sshd", "free_port"]

SSHD = Path("/usr/sbin/sshd")
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sshd:
    """``sshd -D`` on 127.0.0.1:<port>, key login for this user only."""

    def __init__(self, workdir: Path) -> None:
        if not SSHD.exists():
            raise FileNotFoundError(
                f"{SSHD} is missing: install Debian's openssh-server to compare with ssh"
            )
        self.dir = workdir
        self.port = free_port()
        self.user = os.environ.get("USER") or "root"
        for name in ("host", "user"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)],
                check=True,
            )
        shutil.copy(workdir / "user.pub", workdir / "authorized_keys")
        config = workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host'}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile {workdir / 'sshd.pid'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "AllowTcpForwarding yes\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation dir
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("sshd did not listen within 10 s")

    def ssh_args(self, port: int) -> list[str]:
        """ssh options to log in through ``port`` (the emulated link in front of sshd)."""
        return [
            "ssh",
            "-i",
            str(self.dir / "user"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ExitOnForwardFailure=yes",  # a port taken meanwhile: fail, and the caller retries
            "-p",
            str(port),
            f"{self.user}@127.0.0.1",
        ]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SshKernel:
    """A python3 ipykernel started over ssh, reached through ``ssh -L`` forwards."""

    def __init__(self, sshd: Sshd, link_port: int, workdir: Path) -> None:
        key = secrets.token_hex(16)
        remote = {p: free_port() for p in PORTS}
        self.local = {p: free_port() for p in PORTS}
        common = {"transport": "tcp", "ip": "127.0.0.1", "key": key}
        common["signature_scheme"] = "hmac-sha256"
        self.conn_file = workdir / f"kernel-{secrets.token_hex(4)}.json"
        self.conn_file.write_text(json.dumps({**common, **remote}))
        self.info: dict[str, Any] = {**common, **self.local, "key": key.encode()}
        forwards = [arg for p in PORTS for arg in ("-L", f"{self.local[p]}:127.0.0.1:{remote[p]}")]
        remote_cmd = (
            f"echo $$; exec {sys.executable} -m ipykernel_launcher -f {self.conn_file} "
            "--HistoryManager.hist_file=:memory:"
        )
        self.ssh = subprocess.Popen(
            [*sshd.ssh_args(link_port), *forwards, remote_cmd],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.kernel_pid: int | None = None

    def read_pid(self) -> None:
        if self.kernel_pid is None and self.ssh.stdout is not None:
            line = self.ssh.stdout.readline().strip()
            self.kernel_pid = int(line) if line.isdigit() else None

    def stop(self) -> None:
        if self.ssh.poll() is None:
            self.ssh.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ssh.wait(5)
            if self.ssh.poll() is None:
                self.ssh.kill()
        if self.kernel_pid is not None:  # the remote side: gone with the session, or not
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.kernel_pid, signal.SIGKILL)
        self.conn_file.unlink(missing_ok=True)
