"""Find, install (npm ``@foundry-rs/anvil``) and start anvil on a loopback port."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_gpumarket.chain.paths import tools_dir
from jupyter_gpumarket.exceptions import ChainError, RpcUnavailable

__all__ = ["AnvilProcess", "find_anvil", "free_port", "install_anvil", "start_anvil"]

log = logging.getLogger(__name__)

NPM_PACKAGE = "@foundry-rs/anvil"
_BIN = Path("node_modules") / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def _candidates() -> list[Path]:
    found = []
    if env := os.environ.get("GPUMARKET_ANVIL"):
        found.append(Path(env))
    root = tools_dir()
    found.append(root / _BIN)
    found.extend(sorted((root / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil")))
    if on_path := shutil.which("anvil"):
        found.append(Path(on_path))
    return found


def find_anvil() -> Path | None:
    """The anvil binary: $GPUMARKET_ANVIL, the project's tools dir, then PATH; None if absent."""
    for path in _candidates():
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def install_anvil(timeout: float = 300.0) -> Path:
    """``npm install --prefix <tools> @foundry-rs/anvil``; the binary path, or ChainError."""
    npm = shutil.which("npm")
    if npm is None:
        raise ChainError(
            "anvil is not installed and npm is missing; install Node.js (npm) or use "
            "`gpumarket devnet --embedded`"
        )
    root = tools_dir()
    root.mkdir(parents=True, exist_ok=True)
    log.info("installing anvil: npm install --prefix %s %s", root, NPM_PACKAGE)
    try:
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root), NPM_PACKAGE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChainError(f"npm install {NPM_PACKAGE} failed ({exc}); use --embedded") from exc
    path = find_anvil()
    if proc.returncode != 0 or path is None:
        tail = (proc.stderr or proc.stdout).strip()[-500:]
        raise ChainError(
            f"npm install {NPM_PACKAGE} did not produce an anvil binary ({tail}); "
            "check network access to the npm registry or use `gpumarket devnet --embedded`"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AnvilProcess:
    """A running anvil; ``stop()`` (or the context manager) ends it."""

    process: subprocess.Popen[bytes]
    port: int
    rpc_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.rpc_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> AnvilProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_anvil(
    port: int = 0, *, binary: Path | None = None, install: bool = True, timeout: float = 15.0
) -> AnvilProcess:
    """Start anvil on 127.0.0.1:``port`` (0 = a free one); return once it answers RPC."""
    binary = binary or find_anvil() or (install_anvil() if install else None)
    if binary is None:
        raise ChainError("anvil is not installed; run `gpumarket devnet` once or use --embedded")
    port = port or free_port()
    cmd = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--silent"]
    cmd += ["--chain-id", "31337", "--hardfork", "cancun"]
    try:
        # its own session: a terminal's Ctrl-C reaches only the owner, which stops the chain
        # last (providers still unpublish their offers on it)
        process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
    except OSError as exc:
        raise ChainError(f"cannot run {binary} ({exc}); reinstall it or use --embedded") from exc
    anvil = AnvilProcess(process=process, port=port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            anvil.stop()
            raise ChainError(f"anvil exited at start (code {process.returncode}): {err[-400:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return anvil
        except OSError:
            time.sleep(0.02)
    anvil.stop()
    raise RpcUnavailable(f"anvil did not listen on port {port} within {timeout}s; try another port")
