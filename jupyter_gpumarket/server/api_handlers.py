"""REST under ``/gpumarket/api/`` (docs/server-api.md): offers, selection, leases, wallet,
config, telemetry. Thin: parse and check (core.server_api), call off the server's loop,
serialize. Each handler is ``@web.authenticated`` + ``@authorized`` (resource ``gpumarket``);
every failure is ``{"message"}`` JSON with 400/403/404/409/502, never a 500 traceback."""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from jupyter_gpumarket.core.server_api import (
    CONFIG_DEFAULTS,
    MAX_BODY_BYTES,
    check_notebook_path,
    merge_config,
    parse_offers_query,
    parse_selection,
)
from jupyter_gpumarket.exceptions import (
    ChainError,
    ConfigError,
    GpuMarketError,
    TunnelError,
    WalletError,
    WrongPassword,
)
from jupyter_gpumarket.provisioning import selection_store, wallet_memory
from jupyter_gpumarket.server import api_chain, api_leases, handlers

__all__ = ["api_routes"]

AUTH_RESOURCE = handlers.AUTH_RESOURCE
DEFAULT_UNLOCK_S = 3600.0
MAX_PASSWORD_CHARS = 1024
WRONG_PASSWORD_DELAY_S = 1.0

F = TypeVar("F", bound=Callable[..., Awaitable[None]])


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status(exc: Exception) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, WrongPassword):
        return 403
    if isinstance(exc, ConfigError):
        return 400
    if isinstance(exc, ChainError | TunnelError | ConnectionError | TimeoutError):
        return 502
    return 409 if isinstance(exc, WalletError) else 502


def json_errors(method: F) -> F:
    """Answer the project's errors (and bad input) as ``{"message"}`` with their status."""

    @functools.wraps(method)
    async def wrapper(self: ApiHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except (ApiError, GpuMarketError, ConnectionError, TimeoutError) as exc:
            status = _status(exc)
            message = str(exc) or type(exc).__name__
            if status == 502 and not isinstance(exc, GpuMarketError | ApiError):
                message = (
                    f"the chain or provider did not answer ({message}); check that the "
                    "network profile's RPC runs (`gpumarket network list`), then retry"
                )
            self.log.info(
                "gpumarket api %s %s: %s %s",
                self.request.method,
                self.request.path,
                status,
                message,
            )
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": message}))

    return wrapper  # type: ignore[return-value]


class ApiHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    def body(self) -> Any:
        raw = self.request.body or b""
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(400, f"the body is larger than {MAX_BODY_BYTES} bytes")
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body is not valid JSON; send a JSON object") from None

    def query(self) -> dict[str, str]:
        out = {}
        for name in self.request.query_arguments:
            value = self.get_query_argument(name)
            if name.isdigit() and not value:
                continue  # JupyterLab's cache buster (ServerConnection, cache 'no-store'): ?<ms>
            if len(value) > 2048:
                raise ApiError(400, f"query parameter {name[:40]!r} is too long")
            out[name] = value
        return out

    def reply(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class OffersHandler(ApiHandler):
    """GET offers: the market's offers ranked as ``gpumarket offers --json`` ranks them."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        query, network = parse_offers_query(self.query())
        cache: api_chain.OffersCache = self.settings.setdefault(
            "gpumarket_offers_cache", api_chain.OffersCache()
        )
        self.reply(await cache.get(network, query))


class SelectionHandler(ApiHandler):
    """GET/POST/DELETE selection: the offer a notebook's gpumarket kernel launches on."""

    def _path(self) -> str | None:
        return check_notebook_path(self.get_query_argument("path", None))

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        path = self._path()
        stored = await asyncio.to_thread(selection_store.selections)
        default = stored.get("")
        chosen = default if path is None else stored.get(path)
        self.reply({"path": path, "selection": chosen, "default": default})

    @web.authenticated
    @authorized
    @json_errors
    async def post(self) -> None:
        path, selection = parse_selection(self.body())
        await asyncio.to_thread(api_chain.check_offer, selection)
        await asyncio.to_thread(selection_store.save_selection, path, selection)
        self.reply({**selection, "path": path})

    @web.authenticated
    @authorized
    @json_errors
    async def delete(self) -> None:
        path = self._path()
        await asyncio.to_thread(selection_store.delete_selection, path)
        self.reply({"path": path, "selection": None})


class LeasesHandler(ApiHandler):
    """GET leases: as ``GET /gpumarket/leases``."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        every = self.get_query_argument("all", "0")
        if every not in ("0", "1"):
            raise ApiError(400, "all must be 0 or 1")
        recovery = self.extensionapp.recovery  # type: ignore[attr-defined]
        self.reply(await recovery.report(all_networks=every == "1"))


class LeaseHandler(ApiHandler):
    """DELETE leases/{lease_id}: stop the lease's kernel, settle, say what it cost."""

    @web.authenticated
    @authorized
    @json_errors
    async def delete(self, lease_id: str) -> None:
        text = lease_id.lower().removeprefix("0x")
        if not 0 < len(text) <= 66 or any(c not in "0123456789abcdef" for c in text):
            raise ApiError(404, f"no lease {lease_id[:80]!r}: GET leases lists them")
        try:
            result = await api_leases.stop_lease(self.kernel_manager, lease_id)
        except ConfigError as exc:
            raise ApiError(404, str(exc)) from None
        self.reply(result)


async def wallet_view() -> dict[str, Any]:
    """The wallet as ``GET wallet`` shows it: never a key or a password."""
    from jupyter_gpumarket.chain.keystore import keystore_address

    from_env = bool(os.environ.get("GPUMARKET_WALLET_PASSWORD"))
    expires = wallet_memory.expires_in()
    out: dict[str, Any] = {
        "address": None,
        "network": None,
        "unlocked": from_env or expires is not None,
        "unlock_source": "environment" if from_env else "memory" if expires is not None else None,
        "unlock_expires_in_s": None if from_env or expires is None else round(expires, 1),
        "balances": {"token": None, "native": None},
        "token": None,
        "message": None,
    }
    try:
        out["address"] = await asyncio.to_thread(keystore_address)
        profile = await asyncio.to_thread(api_chain.profile_for, None)
        out["network"], out["token"] = profile.name, api_chain.token_units(profile)
        out["chain_id"] = profile.chain_id  # a browser wallet must be on this chain
        out["balances"] = await asyncio.to_thread(api_chain.balances, profile, out["address"])
    except (GpuMarketError, ConnectionError, TimeoutError) as exc:
        out["message"] = str(exc)
    return out


class WalletHandler(ApiHandler):
    """GET wallet: address, network, balances, whether it is unlocked."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        self.reply(await wallet_view())


class WalletUnlockHandler(ApiHandler):
    """POST wallet/unlock ``{"password", "timeout_s"}``: checked against the keystore, kept in
    this server's memory only, forgotten after ``timeout_s``."""

    @web.authenticated
    @authorized
    @json_errors
    async def post(self) -> None:
        from jupyter_gpumarket.chain.keystore import load_account

        body = self.body()
        if not isinstance(body, dict) or set(body) - {"password", "timeout_s"}:
            raise ApiError(400, 'the body must be {"password": "...", "timeout_s": seconds}')
        password = body.get("password")
        if not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD_CHARS:
            raise ApiError(400, f"password must be text of 1 to {MAX_PASSWORD_CHARS} characters")
        timeout = body.get("timeout_s", DEFAULT_UNLOCK_S)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= wallet_memory.MAX_TIMEOUT_S
        ):
            raise ApiError(
                400, f"timeout_s must be seconds above 0, at most {wallet_memory.MAX_TIMEOUT_S}"
            )
        lock: asyncio.Lock = self.settings.setdefault("gpumarket_unlock_lock", asyncio.Lock())
        async with lock:  # one scrypt at a time, and at most one wrong guess per second
            try:
                await asyncio.to_thread(load_account, password)
            except WrongPassword:
                await asyncio.sleep(WRONG_PASSWORD_DELAY_S)
                raise
        wallet_memory.unlock(password, float(timeout))
        self.reply(await wallet_view())


class WalletLockHandler(ApiHandler):
    """POST wallet/lock: forget the unlocked password now."""

    @web.authenticated
    @authorized
    @json_errors
    async def post(self) -> None:
        wallet_memory.lock()
        self.reply(await wallet_view())


class ConfigHandler(ApiHandler):
    """GET/PUT config: budget cap, auto top-up, network, policy, verified only, culling."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        self.reply(await asyncio.to_thread(selection_store.load_config))

    @web.authenticated
    @authorized
    @json_errors
    async def put(self) -> None:
        body = self.body()
        checked = merge_config(CONFIG_DEFAULTS, body)  # every field checked before any use
        if checked["network"]:
            from jupyter_gpumarket.chain.profiles import load_profile

            await asyncio.to_thread(load_profile, checked["network"])
        self.reply(await asyncio.to_thread(selection_store.save_config, body))


class TelemetryHandler(ApiHandler):
    """GET telemetry?kernel_id=ID: as ``GET /gpumarket/telemetry``."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        from jupyter_gpumarket.provisioning import GpuMarketProvisioner

        kernel_id = self.get_query_argument("kernel_id", "")
        if not kernel_id or kernel_id not in self.kernel_manager:
            raise ApiError(404, f"no kernel {kernel_id[:80]!r}: pass ?kernel_id=ID")
        provisioner = getattr(self.kernel_manager.get_kernel(kernel_id), "provisioner", None)
        if not isinstance(provisioner, GpuMarketProvisioner):
            raise ApiError(400, f"kernel {kernel_id} is not a gpumarket kernel")
        history = provisioner.telemetry()
        latest = history[-1] if history else None
        self.reply({"kernel_id": kernel_id, "latest": latest, "history": history})


_API = r"/gpumarket/api"

api_routes: list[tuple[str, type[ApiHandler]]] = [
    (rf"{_API}/offers", OffersHandler),
    (rf"{_API}/selection", SelectionHandler),
    (rf"{_API}/leases", LeasesHandler),
    (rf"{_API}/leases/(?P<lease_id>[^/]+)", LeaseHandler),
    (rf"{_API}/wallet", WalletHandler),
    (rf"{_API}/wallet/unlock", WalletUnlockHandler),
    (rf"{_API}/wallet/lock", WalletLockHandler),
    (rf"{_API}/config", ConfigHandler),
    (rf"{_API}/telemetry", TelemetryHandler),
]
