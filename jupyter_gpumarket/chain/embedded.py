"""Serve ``EmbeddedRpc`` over HTTP on loopback, in a background thread."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jupyter_gpumarket.chain.embedded_rpc import EmbeddedRpc
from jupyter_gpumarket.core import safejson
from jupyter_gpumarket.exceptions import ChainError

__all__ = ["EmbeddedChain", "start_embedded"]

_MAX_REQUEST = 64 * 1024 * 1024  # a contract deployment is well under 1 MB

log = logging.getLogger(__name__)


def _handler(rpc: EmbeddedRpc) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 <= length <= _MAX_REQUEST:
                    raise ValueError(f"request of {length} bytes")
                request = safejson.loads(self.rfile.read(length), "rpc", max_bytes=_MAX_REQUEST)
            except ValueError:
                body: Any = {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32700, "message": "parse error"},
                }
            else:
                if isinstance(request, list):
                    body = [rpc.handle(r) for r in request]
                else:
                    body = rpc.handle(request)
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("embedded rpc: " + format, *args)

    return Handler


class EmbeddedChain:
    """A py-evm chain answering JSON-RPC at ``rpc_url`` until ``stop()``."""

    def __init__(self, port: int = 0) -> None:
        self.rpc = EmbeddedRpc()
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self.rpc))
        except OSError as exc:
            raise ChainError(
                f"cannot listen on 127.0.0.1:{port} ({exc}); pick another --port"
            ) from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.rpc_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gpumarket-embedded-chain", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> EmbeddedChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded(port: int = 0) -> EmbeddedChain:
    """Start the embedded chain on 127.0.0.1:``port`` (0 = a free port)."""
    return EmbeddedChain(port)
