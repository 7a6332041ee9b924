"""The widgets' one path to the Jupyter server: find it from inside the local kernel, then call
the gpumarket REST API (docs/server-api.md) and the server's sessions API with its token.

Which server: the standard runtime info (``jupyter_server.serverapp.list_running_servers()``)
lists the servers of this user; the one whose ``GET /api/kernels`` lists this kernel's id (from
ipykernel's connection file name, ``kernel-<id>.json``) is ours. Which notebook: the session of
that kernel (``GET /api/sessions``), else ``$JPY_SESSION_NAME``.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError, RpcUnavailable

__all__ = ["API", "ServerClient", "find_server", "this_kernel_id"]

API = "gpumarket/api/"
MAX_RESPONSE = 8 * 1024 * 1024
_KERNEL_FILE = re.compile(r"kernel-([0-9a-fA-F-]{8,64})\.json$")


def this_kernel_id() -> str | None:
    """This kernel's id, from ipykernel's connection file name; None outside a kernel."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # not in a kernel: no app, no connection file
        return None
    m = _KERNEL_FILE.search(name)
    return m.group(1) if m else None


@dataclass
class ServerClient:
    """A Jupyter server's base URL (ends with ``/``) and token; JSON in, JSON out."""

    url: str
    token: str
    kernel_id: str | None = None
    timeout: float = 60.0

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``path`` relative to the base URL (``gpumarket/api/offers``, ``api/sessions``).
        Errors: the server's JSON ``message`` in a project error saying what to do."""
        q = {k: v for k, v in (query or {}).items() if v is not None}
        full = self.url + path + (("?" + urllib.parse.urlencode(q)) if q else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(full, data=data, method=method, headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                text = resp.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as e:
            raise _http_error(method, path, e) from None
        except (urllib.error.URLError, OSError) as e:
            raise RpcUnavailable(
                f"the Jupyter server at {self.url} did not answer {method} {path} ({e}): "
                "is it still running? Re-run the cell once it is."
            ) from None
        if len(text) > MAX_RESPONSE:
            raise ConfigError(f"{method} {path}: the server's answer is over {MAX_RESPONSE} bytes")
        return json.loads(text) if text.strip() else None

    def api(self, method: str, route: str, body: Any = None, **query: Any) -> Any:
        """A gpumarket REST route: ``api("GET", "offers", gpu="H100")``."""
        return self.request(method, API + route, body, query)

    def ws_url(self, route: str) -> str:
        base = "ws" + self.url[len("http") :] if self.url.startswith("http") else self.url
        return base + API + route

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"token {self.token}"
        return h

    def notebook_session(self) -> dict[str, Any] | None:
        """The server's session (``/api/sessions`` entry) of this kernel, if any."""
        if not self.kernel_id:
            return None
        for s in self.request("GET", "api/sessions") or []:
            if isinstance(s, dict) and (s.get("kernel") or {}).get("id") == self.kernel_id:
                return s
        return None

    def notebook_path(self) -> str | None:
        """This notebook's path relative to the server root: its session, else the env."""
        s = self.notebook_session()
        if s and isinstance(s.get("path"), str):
            return str(s["path"])
        return os.environ.get("JPY_SESSION_NAME") or None


def _http_error(method: str, path: str, e: urllib.error.HTTPError) -> GpuMarketError:
    try:
        message = str(json.loads(e.read(64 * 1024)).get("message", ""))[:500]
    except Exception:
        message = ""
    what = f"{method} {path} -> {e.code}" + (f": {message}" if message else "")
    if e.code == 404 and not message:
        return ConfigError(
            f"{what}: the server has no such route; is the jupyter_gpumarket server extension "
            "enabled (`jupyter server extension list`)? Restart Jupyter after installing."
        )
    if e.code in (401, 403) and not message:
        return ConfigError(f"{what}: the server refused this kernel's token; restart Jupyter")
    if e.code >= 500:
        return RpcUnavailable(f"{what}; try again, or look at the Jupyter server's log")
    return ConfigError(what)


def _servers() -> Iterable[dict[str, Any]]:
    from jupyter_server.serverapp import list_running_servers

    return list(list_running_servers())


def find_server(
    kernel_id: str | None = None,
    servers: Callable[[], Iterable[dict[str, Any]]] = _servers,
) -> ServerClient:
    """The running Jupyter server that owns this kernel (``kernel_id``: default, this one's).

    With no kernel id (plain Python), the only running server is used. Raises ConfigError when
    none is found, naming what to do."""
    kid = kernel_id or this_kernel_id()
    found = []
    for info in servers():
        url = info.get("url")
        if not isinstance(url, str) or not url.startswith("http"):
            continue
        client = ServerClient(url if url.endswith("/") else url + "/", str(info.get("token") or ""))
        client.kernel_id = kid
        found.append(client)
        if kid is None:
            continue
        try:
            kernels = client.request("GET", "api/kernels", timeout=5)
        except GpuMarketError:
            continue
        if any(isinstance(k, dict) and k.get("id") == kid for k in kernels or []):
            return client
    if kid is None and len(found) == 1:
        return found[0]
    where = f"kernel {kid}" if kid else "this Python process"
    raise ConfigError(
        f"no running Jupyter server owns {where} ({len(found)} server(s) in the runtime info): "
        "run the picker in a notebook opened from JupyterLab, or pass "
        "client=ServerClient(url, token) to pick()/status()"
    )
