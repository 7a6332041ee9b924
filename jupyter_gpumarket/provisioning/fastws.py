"""A picows (Cython) websocket for the renter's link, behind the interface the link, its
connect and :class:`~jupyter_gpumarket.wire.SessionPipe` use of websockets' ClientConnection.

What it keeps of websockets' client: the certificate pin checked right after the TLS
handshake (before the upgrade request is sent: nothing leaves for a peer that is not the
pinned one), ``max_size`` on whole messages (fragments reassembled, the limit applied to the
total; more is refused with close code 1009), no compression, text and binary kept apart, a
closing handshake bounded by ``close_timeout``, a bounded receive queue (reading the transport
pauses at ``max_queue`` messages and resumes at a quarter of it), byte counters for liveness
(``rx_at`` / ``rx_bytes``, counted as the transport delivers bytes, before a message is whole),
and the same exceptions (websockets' ConnectionClosed, with the close frames received and sent),
so the callers' error mapping is unchanged.

``GPUMARKET_TUNNEL_WS`` picks the implementation: ``picows`` (default) or ``websockets``.
This module connects (TCP, TLS, the pin, the upgrade); the connection is fastws_conn's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any

from picows import WSAutoPingStrategy, WSError
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # what ws_connect builds
from picows.url import parse_url

from jupyter_gpumarket.core.pinning import fingerprint, fingerprint_matches
from jupyter_gpumarket.exceptions import ConfigError, ProviderUnreachable, TlsFingerprintMismatch
from jupyter_gpumarket.pinned import Mismatch, Unreachable, client_ssl_context
from jupyter_gpumarket.provisioning.fastws_conn import CountingProtocol, PicowsConnection

__all__ = ["ENV", "PicowsConnection", "connect_pinned", "open_connection", "tunnel_ws"]

ENV = "GPUMARKET_TUNNEL_WS"
IMPLEMENTATIONS = ("picows", "websockets")
_READ_BUFFER = 256 * 1024  # picows' first read buffer; it doubles while a frame needs more


def tunnel_ws() -> str:
    """The websocket implementation of the renter's link (env ``GPUMARKET_TUNNEL_WS``)."""
    value = os.environ.get(ENV, "").strip().lower() or "picows"
    if value not in IMPLEMENTATIONS:
        raise ConfigError(
            f"{ENV}={value!r} is not a websocket implementation: use 'picows' (the default) "
            "or 'websockets'"
        )
    return value


async def open_connection(
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    check_peer: Any,
    open_timeout: float,
    max_size: int,
    max_queue: int = 64,
    close_timeout: float = 1.0,
) -> PicowsConnection:
    """TCP, TLS, then ``check_peer(der_or_None)`` (raise to refuse: the transport is aborted
    before a byte of the upgrade request is written), then the websocket upgrade.
    OSError / TimeoutError / picows' errors propagate for the caller to map."""
    parsed = parse_url(url)
    loop = asyncio.get_running_loop()
    conn = PicowsConnection(max_size=max_size, max_queue=max_queue, close_timeout=close_timeout)
    async with asyncio.timeout(open_timeout):
        transport, counter = await loop.create_connection(
            CountingProtocol,
            parsed.host,
            parsed.port,
            ssl=ssl_context if parsed.is_secure else None,
            server_hostname=parsed.host if parsed.is_secure else None,
        )
        try:
            ssl_object = transport.get_extra_info("ssl_object")
            check_peer(ssl_object.getpeercert(binary_form=True) if ssl_object else None)
            conn.transport = transport
            conn._counter = counter
            proto = WSProtocol(
                parsed.netloc,
                parsed.resource_name,
                True,  # client side
                lambda *negotiated: conn,
                logging.getLogger("picows.client"),
                True,  # an exception in a callback fails the connection
                None,  # the upgrade's timeout: open_timeout's
                False,  # no auto ping: liveness is the pipe's
                10.0,
                10.0,
                WSAutoPingStrategy.PING_WHEN_IDLE,
                True,  # answer pings
                max_size,  # per frame; whole messages are checked in on_ws_frame
                None,
                _READ_BUFFER,
            )
            counter.inner = proto
            proto.connection_made(transport)
            await proto.wait_until_handshake_complete()
            if conn._ws is None:
                raise ConnectionError("the connection closed during the websocket upgrade")
        except BaseException:
            transport.abort()
            raise
    return conn


async def connect_pinned(
    url: str,
    tls_fingerprint: str,
    *,
    unreachable: Unreachable,
    mismatch: Mismatch,
    open_timeout: float,
    max_size: int,
    max_queue: int = 64,
    close_timeout: float = 1.0,
) -> PicowsConnection:
    """:func:`jupyter_gpumarket.pinned.connect_pinned` over picows: the same pin, the same
    errors (ProviderUnreachable, TlsFingerprintMismatch), but the pin is checked before the
    upgrade request is sent."""

    def check(der: bytes | None) -> None:
        if not der or not fingerprint_matches(der, tls_fingerprint):
            raise TlsFingerprintMismatch(mismatch(fingerprint(der) if der else "no certificate"))

    try:
        return await open_connection(
            url,
            ssl_context=client_ssl_context(),
            check_peer=check,
            open_timeout=open_timeout,
            max_size=max_size,
            max_queue=max_queue,
            close_timeout=close_timeout,
        )
    except TlsFingerprintMismatch:  # a ConnectionError, so an OSError: not unreachable
        raise
    except (OSError, TimeoutError, WSError, ValueError) as exc:
        raise ProviderUnreachable(unreachable(exc)) from exc
