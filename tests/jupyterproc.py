"""A real Jupyter server as a subprocess (its own runtime/config dirs), for end-to-end tests.

pytest-jupyter's in-process server fixtures take over collection of every coroutine test and
run them on their own loop, which breaks the pytest-asyncio tests (agent, chain) of this suite;
a subprocess is also closer to what users run, and it can be killed and restarted for real.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection


def execute(ws: ClientConnection, code: str) -> tuple[dict[str, Any], str]:
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": True},
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    text = ""
    reply = None
    idle = False
    while reply is None or not idle:  # shell and iopub are not ordered with each other
        msg = json.loads(ws.recv(timeout=60))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            text += msg["content"]["text"]
        elif msg["msg_type"] == "execute_reply":
            reply = msg
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    return reply, text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class JupyterServer:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log_path: Path

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def ws_url(self, path: str) -> str:
        return self.url.replace("http://", "ws://") + f"{path}?token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_jupyter(
    tmp: Path, env: dict[str, str], *extra: str, timeout: float = 60, token: str | None = None
) -> JupyterServer:
    """Start `jupyter server` in ``tmp`` with ``env`` added; wait until /api/status answers.

    ``token=""``: no authentication (loopback only), for clients that cannot send a token on
    websockets, like jupyter_server's own GatewayKernelManager used by nbclient."""
    root = tmp / "notebooks"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    token = secrets.token_hex(16) if token is None else token
    log_path = tmp / f"jupyter-{port}.log"
    full_env = {
        **os.environ,
        **env,
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        *extra,
    ]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = JupyterServer(proc, f"http://127.0.0.1:{port}", token, log_path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.request("GET", "/api/status", timeout=2)
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"jupyter server did not start:\n{server.log()}") from None
            time.sleep(0.1)
