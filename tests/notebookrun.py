"""Run a notebook's cells the way a user does: in the kernels of a real Jupyter server.

A notebook of this project starts on the local ``python3`` kernel (the picker needs the user's
server: it finds it through the runtime info, from a kernel that server owns) and continues on
the remote ``gpumarket`` kernel after "Use" switched the session. Cells say where they run with
the tags ``local`` and ``remote``; untagged code cells are for people only (``input()``, long
sleeps) and are skipped. :class:`NotebookSession` holds the server session of one notebook and
executes a cell on whichever kernel the session has now, over the kernel's websocket.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.sync.client import ClientConnection, connect

from jupyterproc import JupyterServer

__all__ = ["CellError", "NotebookSession", "text_of", "where"]


class CellError(AssertionError):
    """A cell raised: its traceback, as the kernel sent it."""


def where(cell: Any) -> str | None:
    """``local``, ``remote`` or None (a cell for people, skipped in CI)."""
    tags = set(cell.get("metadata", {}).get("tags", []))
    return next((t for t in ("local", "remote") if t in tags), None)


def text_of(outputs: list[dict[str, Any]]) -> str:
    """Everything a cell printed or returned, as text."""
    parts = []
    for out in outputs:
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(str(out["data"].get("text/plain", "")))
    return "".join(parts)


@dataclass
class NotebookSession:
    server: JupyterServer
    path: str
    session_id: str = ""
    kernel_id: str = ""
    _ws: ClientConnection | None = field(default=None, repr=False)
    _client_session: str = field(default_factory=lambda: uuid.uuid4().hex)

    def open(self, kernel_name: str = "python3", timeout: float = 120) -> NotebookSession:
        """A server session for ``path`` (as JupyterLab makes when the notebook opens)."""
        body = {"path": self.path, "type": "notebook", "name": "", "kernel": {"name": kernel_name}}
        session = self.server.request("POST", "/api/sessions", body, timeout=timeout)
        self.session_id, self.kernel_id = session["id"], session["kernel"]["id"]
        return self

    def kernel(self) -> dict[str, Any]:
        return self.server.request("GET", f"/api/sessions/{self.session_id}")["kernel"]

    def wait_for_kernel(self, name: str, timeout: float = 300) -> dict[str, Any]:
        """Until the session's kernel is a ``name`` kernel other than the one we knew (the
        switch that "Use" asked for, or a Change Kernel)."""
        deadline = time.monotonic() + timeout  # hang detection only
        while True:
            kernel = self.kernel()
            if (
                kernel["name"] == name
                and kernel["id"] != self.kernel_id
                # "starting" until a client talks to it: the launch itself is over once the
                # server lists the kernel in the session
                and kernel["execution_state"] != "dead"
            ):
                self._close()
                self.kernel_id = kernel["id"]
                return kernel
            assert time.monotonic() < deadline, f"the session never switched to {name}: {kernel}"
            time.sleep(0.3)

    def change_kernel(self, name: str, timeout: float = 300) -> dict[str, Any]:
        """Kernel → Change Kernel: the server stops this kernel and starts a ``name`` one."""
        self._close()
        self.server.request(
            "PATCH", f"/api/sessions/{self.session_id}", {"kernel": {"name": name}}, timeout
        )
        return self.wait_for_kernel(name, timeout)

    def execute(self, code: str, timeout: float = 300) -> list[dict[str, Any]]:
        """Run ``code`` on the session's kernel; its outputs (nbformat dicts). CellError when
        it raised."""
        ws = self._connect()
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps(self._request(msg_id, code)))
        outputs: list[dict[str, Any]] = []
        reply = None
        idle = False
        deadline = time.monotonic() + timeout  # hang detection only
        while reply is None or not idle:
            msg = json.loads(ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                outputs.append(
                    {"output_type": "stream", "name": content["name"], "text": content["text"]}
                )
            elif kind == "execute_result":
                outputs.append(
                    {
                        "output_type": kind,
                        "data": content["data"],
                        "metadata": {},
                        "execution_count": content.get("execution_count"),
                    }
                )
            elif kind == "display_data":
                outputs.append({"output_type": kind, "data": content["data"], "metadata": {}})
            elif kind == "error":
                outputs.append({"output_type": "error", **content})
            elif kind == "execute_reply":
                reply = content
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        if reply["status"] != "ok":
            trace = "\n".join(reply.get("traceback") or [reply.get("evalue", "")])
            raise CellError(f"{code[:200]}\n---\n{trace}")
        return outputs

    def close(self) -> None:
        self._close()
        if self.session_id:
            self.server.request("DELETE", f"/api/sessions/{self.session_id}", timeout=120)
            self.session_id = ""

    def _connect(self) -> ClientConnection:
        if self._ws is None:
            url = self.server.ws_url(f"/api/kernels/{self.kernel_id}/channels")
            # entered as a context manager (websockets deprecates the bare form)
            self._ws = connect(url, max_size=None, open_timeout=60).__enter__()
        return self._ws

    def _close(self) -> None:
        if self._ws is not None:
            self._ws.__exit__(None, None, None)
            self._ws = None

    def _request(self, msg_id: str, code: str) -> dict[str, Any]:
        return {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "test",
                "session": self._client_session,
                "version": "5.3",
                "date": "",
            },
            "parent_header": {},
            "metadata": {},
            "content": {"code": code, "silent": False, "store_history": True, "allow_stdin": False},
            "channel": "shell",
            "buffers": [],
        }
