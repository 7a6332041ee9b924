"""Launch routes under /gpumarket/api/ (docs/server-api.md): the launches, confirm and cancel,
the cost quote, and the event stream (a websocket).

Thin: parse, call the hub (:mod:`jupyter_gpumarket.provisioning.launch_events`), serialize.
Every handler is ``@web.authenticated`` (the websocket: ``@ws_authenticated``) and
``@authorized`` on the ``gpumarket`` resource; errors are ``{"message": ...}`` with 400, 404,
409 or 502, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web, websocket

from jupyter_gpumarket.core.quote import Quote, make_quote
from jupyter_gpumarket.exceptions import (
    ChainError,
    ConfigError,
    GpuMarketError,
    LaunchStateConflict,
    PaymentError,
)
from jupyter_gpumarket.provisioning.launch_events import LaunchTracker, hub
from jupyter_gpumarket.server.event_outbox import EVENT_QUEUE, EventOutbox

__all__ = ["launch_handlers"]

AUTH_RESOURCE = "gpumarket"
MAX_BODY = 64 * 1024


def _fail(status: int, message: str) -> web.HTTPError:
    return web.HTTPError(status, message.replace("%", "%%"), reason=None)


def _tracker(kernel_id: str) -> LaunchTracker:
    t = hub().get(kernel_id)
    if t is None:
        raise _fail(
            404, f"no gpumarket launch of kernel {kernel_id[:80]!r}: GET launches lists them"
        )
    return t


def _json_body(handler: APIHandler) -> dict[str, Any]:
    body = handler.request.body or b"{}"
    if len(body) > MAX_BODY:
        raise _fail(400, f"the request body is over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _fail(400, "the request body is not JSON: send a JSON object") from None
    if not isinstance(data, dict):
        raise _fail(400, "the request body must be a JSON object")
    return data


class LaunchesHandler(APIHandler):
    """GET /gpumarket/api/launches: the latest launch event of every gpumarket kernel."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.finish(json.dumps({"launches": hub().launches()}))


class LaunchConfirmHandler(APIHandler):
    """POST /gpumarket/api/launches/ID/confirm ``{"quote": <Quote>}``: pay as quoted."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def post(self, kernel_id: str) -> None:
        t = _tracker(kernel_id)
        data = _json_body(self)
        unknown = sorted(str(k)[:40] for k in data if k != "quote")
        if unknown:
            raise _fail(400, f"unknown field(s) {unknown[:4]}: send {{'quote': <Quote>}}")
        try:
            t.confirm(Quote.from_json(data.get("quote")))
        except LaunchStateConflict as exc:
            raise _fail(409, str(exc)) from None
        except ConfigError as exc:
            raise _fail(400, str(exc)) from None
        self.finish(json.dumps(t.event()))


class LaunchCancelHandler(APIHandler):
    """POST /gpumarket/api/launches/ID/cancel: stop a launch before ready (409 after)."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        t = _tracker(kernel_id)
        try:
            t.cancel()
        except LaunchStateConflict as exc:
            raise _fail(409, str(exc)) from None
        # answer with the launch's end when it comes soon (a channel being opened may take
        # a block or two longer: the event stream then says when it ended)
        for _ in range(100):
            if t.state.value in ("ended", "failed"):
                break
            await asyncio.sleep(0.1)
        self.finish(json.dumps(t.event()))


class LaunchSignedHandler(APIHandler):
    """POST /gpumarket/api/launches/ID/signed ``{"tx_hash"}`` or ``{"open_sig",
    "permit_sig"}``: the browser wallet's answer to the ``sign`` event. Checked against the
    chain; a bad one is a 400 and the launch keeps waiting."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        from jupyter_gpumarket.provisioning.browser_lease import pending

        _tracker(kernel_id)
        waiting = pending(kernel_id)
        if waiting is None:
            raise _fail(409, f"kernel {kernel_id[:80]} is not waiting for a signed opening")
        data = _json_body(self)
        try:
            answer = await asyncio.to_thread(waiting.submit, data)
        except LaunchStateConflict as exc:
            raise _fail(409, str(exc)) from None
        except (PaymentError, ConfigError) as exc:
            raise _fail(400, str(exc)) from None
        except GpuMarketError as exc:
            raise _fail(502, str(exc)) from None
        except OSError as exc:
            raise _fail(502, f"the chain could not be reached ({exc}): try again") from None
        self.finish(json.dumps(answer))


def _number(handler: APIHandler, name: str, default: str, kind: type) -> Any:
    text = handler.get_query_argument(name, default)[:40]
    try:
        value = kind(text)
    except ValueError:
        raise _fail(400, f"{name}={text!r} is not a number") from None
    if not value > 0:
        raise _fail(400, f"{name} must be positive, got {text!r}")
    return value


def _quote(network: str, offer_id: int, budget: int, hours: float) -> Quote:
    """The quote of ``offer_id`` on ``network`` (blocking: one registry read)."""
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.provisioning.offers import pick_offer

    profile = load_profile(network) if network else active_profile()
    token, escrow, registry = profile.require_contracts()
    contracts = Contracts.bound(connect(profile.rpc_url), token, escrow, registry)
    offer = pick_offer(contracts.registry, str(offer_id))
    return make_quote(
        offer.offer_id,
        offer.price_per_hour,
        budget,
        hours,
        profile.token_symbol,
        profile.token_decimals,
    )


class QuoteHandler(APIHandler):
    """GET /gpumarket/api/quote?offer=ID&budget=N&initial_hours=H[&network=P]: the cost of
    a launch on offer ID, as the confirmation shows it."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        offer_text = self.get_query_argument("offer", "")[:40]
        if not offer_text.isascii() or not offer_text.isdigit():
            raise _fail(400, "offer must be an offer id (GET offers lists them)")
        budget = _number(self, "budget", os.environ.get("GPUMARKET_BUDGET", "10000000"), int)
        hours = _number(
            self, "initial_hours", os.environ.get("GPUMARKET_INITIAL_HOURS", "1"), float
        )
        network = self.get_query_argument("network", os.environ.get("GPUMARKET_NETWORK", ""))
        try:
            quote = await asyncio.to_thread(_quote, network[:300], int(offer_text), budget, hours)
        except ChainError as exc:
            raise _fail(502, str(exc)) from None
        except (ConfigError, PaymentError) as exc:
            status = 404 if "offer" in str(exc) and "registry" in str(exc) else 400
            raise _fail(status, str(exc)) from None
        except GpuMarketError as exc:
            raise _fail(502, str(exc)) from None
        except OSError as exc:
            raise _fail(502, f"the chain could not be reached ({exc}): check the network") from None
        self.finish(json.dumps(quote.to_json()))


class EventsHandler(JupyterHandler, websocket.WebSocketHandler):
    """GET /gpumarket/api/events (websocket): a snapshot of every launch (and spend), then
    each event as one JSON text message. A client more than EVENT_QUEUE events behind is
    dropped (closed with 1008): the server never waits for a slow client."""

    auth_resource = AUTH_RESOURCE

    async def pre_get(self) -> None:
        user = self.current_user
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, user, "read", AUTH_RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403)

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get()
        res = super().get(*args, **kwargs)
        if res is not None:
            await res

    def open(self, *args: Any, **kwargs: Any) -> None:
        self._outbox = EventOutbox(asyncio.get_running_loop(), self.write_message, self._drop)
        for event in hub().snapshot():
            self._outbox.offer(event)
        self._unsubscribe: Callable[[], None] | None = hub().subscribe(self._outbox.offer)
        self._writer = asyncio.ensure_future(self._write_all())

    async def _write_all(self) -> None:
        with contextlib.suppress(websocket.WebSocketClosedError):
            await self._outbox.run()
        self._stop()

    def _drop(self) -> None:
        self.log.warning("gpumarket events: a client fell %s events behind; dropped", EVENT_QUEUE)
        self._stop()
        self.close(1008, "too slow: reconnect and read the snapshot")

    def _stop(self) -> None:
        outbox = getattr(self, "_outbox", None)
        if outbox is not None:
            outbox.close()
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None
        writer = getattr(self, "_writer", None)
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()

    def on_message(self, message: str | bytes) -> None:
        """Clients only listen."""

    def on_close(self) -> None:
        self._stop()


_kernel_id = r"(?P<kernel_id>[\w-]+)"

launch_handlers = [
    (r"/gpumarket/api/launches", LaunchesHandler),
    (rf"/gpumarket/api/launches/{_kernel_id}/confirm", LaunchConfirmHandler),
    (rf"/gpumarket/api/launches/{_kernel_id}/cancel", LaunchCancelHandler),
    (rf"/gpumarket/api/launches/{_kernel_id}/signed", LaunchSignedHandler),
    (r"/gpumarket/api/quote", QuoteHandler),
    (r"/gpumarket/api/events", EventsHandler),
]
