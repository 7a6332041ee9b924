"""Thin tornado handlers: parse, call, serialize.

Each is ``@web.authenticated`` (who is it) and ``@authorized`` (may they), so the server's
Authorizer decides on the ``gpumarket`` resource: GET is ``read``, POST is ``write``.
"""

from __future__ import annotations

import errno
import json
from typing import TYPE_CHECKING, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from jupyter_gpumarket._version import __version__
from jupyter_gpumarket.exceptions import GpuMarketError
from jupyter_gpumarket.provisioning import GpuMarketProvisioner

if TYPE_CHECKING:
    from jupyter_gpumarket.server.app import GpuMarketExtension

AUTH_RESOURCE = "gpumarket"


class HealthHandler(ExtensionHandlerMixin, APIHandler):
    """GET /gpumarket/health: version and number of running kernels."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self) -> None:
        kernels = len(self.kernel_manager.list_kernel_ids())
        self.finish(json.dumps({"version": __version__, "kernels": kernels}))


class LeasesHandler(ExtensionHandlerMixin, APIHandler):
    """GET /gpumarket/leases[?all=1]: the renter's leases of the active network (``all=1``:
    of every network), reconciled with the chain, and how the recovery of each deposit stands
    (``{"mode", "message", "leases": [{..., "spent_source", "deposit_left", "network_label",
    "expected_refund", "recovery": {"status", "next_at", "error", "command"}}]}``; amounts in
    token base units)."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        every = self.get_query_argument("all", "0")
        if every not in ("0", "1"):
            raise web.HTTPError(400, "all must be 0 or 1")
        try:
            app = cast("GpuMarketExtension", self.extensionapp)
            report = await app.recovery.report(all_networks=every == "1")
        except GpuMarketError as exc:
            raise web.HTTPError(500, str(exc)) from exc
        self.finish(json.dumps(report))


class PullFilesHandler(ExtensionHandlerMixin, APIHandler):
    """POST /gpumarket/kernels/<id>/pull: bring files the remote kernel wrote back now."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        if kernel_id not in self.kernel_manager:
            raise web.HTTPError(404, f"no kernel {kernel_id}")
        provisioner = getattr(self.kernel_manager.get_kernel(kernel_id), "provisioner", None)
        if not isinstance(provisioner, GpuMarketProvisioner):
            raise web.HTTPError(400, f"kernel {kernel_id} is not a gpumarket kernel")
        try:
            result = await provisioner.pull_files()
        except GpuMarketError as exc:
            raise web.HTTPError(502, str(exc)) from exc
        except OSError as exc:  # the notebook's own disk: not the provider's fault
            raise web.HTTPError(*_local_failure(exc)) from exc
        self.finish(json.dumps(result))


_LOCAL_STATUS = {
    errno.EACCES: (403, "let the Jupyter server's user write the notebook's directory"),
    errno.EPERM: (403, "let the Jupyter server's user write the notebook's directory"),
    errno.EROFS: (403, "the notebook's directory is read-only: make it writable"),
    errno.ENOSPC: (507, "free space on the notebook's disk"),
    errno.EDQUOT: (507, "free space within your disk quota"),
    errno.ENOENT: (409, "the notebook's directory changed meanwhile: check it"),
    errno.ENOTDIR: (409, "a file stands where the pull needs a directory: move it"),
    errno.EISDIR: (409, "a directory stands where a pulled file goes: move it"),
}


def _local_failure(exc: OSError) -> tuple[int, str]:
    status, todo = _LOCAL_STATUS.get(
        exc.errno or 0, (500, "check the notebook's directory and the server's log")
    )
    what = exc.strerror or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    # %-free: HTTPError formats log_message with its args
    msg = f"the pull could not write the notebook's files: {what}{where}; {todo}, then pull again"
    return status, msg.replace("%", "%%")


class TelemetryHandler(ExtensionHandlerMixin, APIHandler):
    """GET /gpumarket/telemetry?kernel_id=ID: the remote kernel's telemetry, ``{"kernel_id",
    "latest", "history"}`` (samples as in core.telemetry, oldest first; ``latest`` null before
    the first sample)."""

    @web.authenticated
    def get(self) -> None:
        kernel_id = self.get_query_argument("kernel_id", "")
        if not kernel_id or kernel_id not in self.kernel_manager:
            raise web.HTTPError(404, f"no kernel {kernel_id[:80]!r}: pass ?kernel_id=ID")
        provisioner = getattr(self.kernel_manager.get_kernel(kernel_id), "provisioner", None)
        if not isinstance(provisioner, GpuMarketProvisioner):
            raise web.HTTPError(400, f"kernel {kernel_id} is not a gpumarket kernel")
        history = provisioner.telemetry()
        latest = history[-1] if history else None
        self.finish(json.dumps({"kernel_id": kernel_id, "latest": latest, "history": history}))


_kernel_id = r"(?P<kernel_id>[\w-]+)"

default_handlers = [
    (r"/gpumarket/health", HealthHandler),
    (r"/gpumarket/leases", LeasesHandler),
    (rf"/gpumarket/kernels/{_kernel_id}/pull", PullFilesHandler),
    (r"/gpumarket/telemetry", TelemetryHandler),
]
