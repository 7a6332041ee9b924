"""Start a real provider agent (`gpumarket provider serve --dev`) as a subprocess for tests."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    url: str
    fingerprint: str
    token: str
    state_dir: Path
    log_path: Path

    def env(self) -> dict[str, str]:
        return {
            "GPUMARKET_PROVIDER_URL": self.url,
            "GPUMARKET_TLS_FINGERPRINT": self.fingerprint,
            "GPUMARKET_DEV_TOKEN": self.token,
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def start_agent(tmp: Path, *extra: str, timeout: float = 30.0) -> AgentProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    ready = tmp / "ready.json"
    log_path = tmp / "agent.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter_gpumarket.cli",
        "provider",
        "serve",
        "--dev",
        f"--dev-token={token}",  # a token may start with "-"
        "--port",
        "0",
        "--state-dir",
        str(tmp / "state"),
        "--ready-file",
        str(ready),
        *extra,
    ]
    if "--sandbox" not in extra:
        # The plain backend unless a test asks: kernels then report host pids, whatever slot
        # users this machine has (tests/e2e/test_isolation.py runs the sandboxed one).
        cmd += ["--sandbox", "off"]
    env = {**os.environ, "GPUMARKET_AGENT_SECRET": "agent-only"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"agent did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    info = json.loads(ready.read_text())
    return AgentProcess(proc, info["url"], info["tls_fingerprint"], token, tmp / "state", log_path)


@contextlib.contextmanager
def running_agent(tmp: Path, *extra: str) -> Iterator[AgentProcess]:
    agent = start_agent(tmp, *extra)
    try:
        yield agent
    finally:
        agent.stop()


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_remote_kernel(
    env: dict[str, str], *, grace: float | None = None, timeout: float = 60.0
) -> tuple[Any, Any]:
    """A ``gpumarket`` kernel started under ``env`` (``link_grace_seconds=grace`` if given) and
    its blocking client, ready; the caller stops both."""
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    traits = {} if grace is None else {"link_grace_seconds": grace}
    km = KernelManager(kernel_name="gpumarket", config=Config({"GpuMarketProvisioner": traits}))
    with environ(env):
        km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=timeout)
    except BaseException:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return km, kc


def wait_dead(km: Any, timeout: float) -> bool:
    """Poll ``km.is_alive()`` until it is False (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not km.is_alive()
