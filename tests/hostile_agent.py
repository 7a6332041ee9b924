"""A real provider agent that misbehaves in file sync, for the renter's attack tests.

Run as a script (``python tests/hostile_agent.py <provider serve args>``): it patches the real
agent's file-sync handler (``LeaseFiles.handle``), then runs ``gpumarket provider serve``
unchanged. The renter chooses the attack of its lease by syncing a marker file
``.attack-<name>`` at launch (the agent sees it in the sync offer):

- ``denied``: the pull manifest lists files under every spelling of the never-pulled dirs
  (``.Git/config``, ``.GIT/hooks/x``, ``GIT~1/config``, ...) and case/Unicode twins of local
  files, plus ``ok.txt``; each blob is served honestly.
- ``unrequested``: the reply to a pull also carries 200 MB of blob chunks nobody asked for.
- ``oversize``: ``big.bin`` is declared as 1 byte; fetching it sends 200 MB.
- ``overcap``: three honest 40 MB files (the renter's test cap is below their sum).
- ``deep``: the pull manifest holds paths 2,000 directories deep, each in its own top dir.

With ``GPUMARKET_TEST_NO_ACK=1`` in its environment the agent never acknowledges what it
receives (a provider that stalls an upload).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jupyter_gpumarket.agent import files as agent_files
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.session import TunnelSession

MB = 1 << 20
PLANTED = b"[core]\n\tfsmonitor = touch /tmp/pwned-by-provider\n"
DENIED_PATHS = (
    ".Git/config",
    ".GIT/hooks/pre-commit",
    "sub/.gIt/config",
    ".git./config",
    ".git /config",
    ".git\u200c/config",
    "GIT~1/config",
    ".git::$INDEX_ALLOCATION/config",
    ".git",
    ".\uff27it/config",  # fullwidth G
    ".VENV/bin/activate",
    "Node_Modules/x/index.js",
    ".GpuMarket/state.json",
    "__PyCache__/m.cpython-311.pyc",
    "NOTES.txt",  # twin of the renter's notes.txt
    "\ufb01le.txt",  # "ﬁle.txt": NFKC twin of the renter's file.txt
)
NOT_GIT = ".gi\u0301t/config"  # a combining accent makes another name: written


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(data: bytes) -> list[Any]:
    return [len(data), _sha(data), 1]


def _chunks(sha: str, data: bytes, chunk: int = MB) -> list[tuple[Any, bytes]]:
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    return [
        (control.BlobChunk(sha256=sha, last=i == len(parts) - 1), p) for i, p in enumerate(parts)
    ]


def _pull_manifest(attack: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest wire form, blobs by sha) the lease under ``attack`` answers a pull with."""
    blobs: dict[str, bytes] = {}
    files: dict[str, list[Any]] = {}

    def add(path: str, data: bytes) -> None:
        files[path] = _entry(data)
        blobs[_sha(data)] = data

    add("ok.txt", b"an honest result\n")
    if attack == "denied":
        for i, path in enumerate((*DENIED_PATHS, NOT_GIT)):
            add(path, PLANTED + str(i).encode())
    elif attack == "oversize":
        files["big.bin"] = [1, _sha(b"x"), 1]
    elif attack == "overcap":
        for i in range(3):
            add(f"out{i}.bin", bytes([i]) * (40 * MB))
    elif attack == "deep":
        for i in range(150):
            files[f"d{i}/" + "a/" * 2000 + "f"] = _entry(b"x")
    return {"files": files}, blobs


class _Hostile:
    def __init__(self, attack: str) -> None:
        self.attack = attack
        self.manifest, self.blobs = _pull_manifest(attack)

    def pull(self) -> Iterator[tuple[Any, bytes | None]]:
        yield control.PullManifest(manifest=self.manifest), None
        if self.attack == "unrequested":
            junk = os.urandom(MB)
            for i in range(200):
                yield control.BlobChunk(sha256=_sha(b"%d" % i), last=False), junk

    def fetch(self, sha: str) -> Iterator[tuple[Any, bytes | None]]:
        if self.attack == "oversize" and sha == _sha(b"x"):
            junk = os.urandom(MB)
            for i in range(200):
                yield control.BlobChunk(sha256=sha, last=i == 199), junk
            return
        data = self.blobs.get(sha)
        if data is None:
            yield control.Refused(request="fetch_blob", message="no such blob"), None
            return
        yield from _chunks(sha, data)


_honest_handle = agent_files.LeaseFiles.handle


def _handle(self: Any, msg: Any, extra: Sequence[bytes]) -> Any:
    if isinstance(msg, control.SyncOffer):
        names = msg.manifest.get("files", {}) if isinstance(msg.manifest, dict) else {}
        attack = next((p[len(".attack-") :] for p in names if p.startswith(".attack-")), None)
        self._hostile = _Hostile(attack) if attack else None
    hostile = getattr(self, "_hostile", None)
    if hostile is not None and isinstance(msg, control.PullRequest):
        return hostile.pull()
    if hostile is not None and isinstance(msg, control.FetchBlob):
        return hostile.fetch(msg.sha256)
    return _honest_handle(self, msg, extra)


def start_hostile_agent(tmp: Path, *, no_ack: bool = False, timeout: float = 30.0) -> Any:
    """Start this script as a dev provider (plain backend); an ``agentproc.AgentProcess``."""
    from agentproc import AgentProcess

    tmp.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    ready, log_path = tmp / "ready.json", tmp / "agent.log"
    cmd = [sys.executable, __file__, "provider", "serve", "--dev", f"--dev-token={token}"]
    cmd += ["--port", "0", "--state-dir", str(tmp / "state"), "--ready-file", str(ready)]
    cmd += ["--sandbox", "off", "--max-kernels", "8"]
    env = {**os.environ, "GPUMARKET_TEST_NO_ACK": "1" if no_ack else "0"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"hostile agent did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    info = json.loads(ready.read_text())
    return AgentProcess(proc, info["url"], info["tls_fingerprint"], token, tmp / "state", log_path)


def main() -> int:
    agent_files.LeaseFiles.handle = _handle  # type: ignore[method-assign]
    if os.environ.get("GPUMARKET_TEST_NO_ACK") == "1":
        TunnelSession.ack_due = lambda self: False  # type: ignore[method-assign]
        TunnelSession.ack_pending = property(lambda self: False)  # type: ignore[assignment,method-assign]
    from jupyter_gpumarket.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
