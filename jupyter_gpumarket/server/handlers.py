"""Thin tornado handlers: parse, call, serialize."""

from __future__ import annotations

import json

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from jupyter_gpumarket._version import __version__


class HealthHandler(ExtensionHandlerMixin, APIHandler):
    """GET /gpumarket/health: version and number of running kernels."""

    @web.authenticated
    def get(self) -> None:
        kernels = len(self.kernel_manager.list_kernel_ids())
        self.finish(json.dumps({"version": __version__, "kernels": kernels}))


default_handlers = [
    (r"/gpumarket/health", HealthHandler),
]
