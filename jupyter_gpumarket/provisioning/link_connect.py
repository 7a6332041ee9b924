"""Opening one websocket to a provider agent for :class:`~.link.RemoteLink`: the pinned TLS
connect, then the handshake (core.handshake) over it. Lower-layer errors (OSError, websockets)
become the project's errors here and nowhere else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.frames import DEFAULT_MAX_FRAME_BYTES
from jupyter_gpumarket.core.handshake import Handshake, Opened
from jupyter_gpumarket.exceptions import (
    AuthenticationFailed,
    LinkLost,
    ProtocolError,
    ProviderRefused,
    ProviderUnreachable,
    TunnelError,
)
from jupyter_gpumarket.pinned import connect_pinned
from jupyter_gpumarket.provisioning import fastws
from jupyter_gpumarket.wire import CLOSE_TIMEOUT, CountingClientConnection

__all__ = ["LinkSettings", "LinkSocket", "ProviderTarget", "connect"]

# the renter's websocket: websockets' (counting bytes) or picows' (fastws), by GPUMARKET_TUNNEL_WS
LinkSocket = CountingClientConnection | fastws.PicowsConnection


@dataclass(frozen=True)
class ProviderTarget:
    url: str
    tls_fingerprint: str
    token: str


@dataclass(frozen=True)
class LinkSettings:
    connect_timeout: float = 15.0
    # Liveness (core.liveness): probe after ping_interval s without a byte from the provider;
    # no byte for ping_timeout s (a stall, a black hole) drops the link and reconnects. Judged
    # by bytes arriving, so a pong queued behind megabytes of output is no false alarm.
    ping_interval: float = 1.0
    ping_timeout: float = 4.0
    link_grace: float = 120.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    # Reconnect backoff: first retry after <= 50 ms, doubling, jittered, never above
    # max_retry, so a link that comes back is used again within ~1 s.
    first_retry: float = 0.05
    max_retry: float = 0.8
    reconnect_timeout: float = 1.5  # per attempt: a black-holed attempt must not block longer


def closed_error(exc: ConnectionClosed, url: str, paid: bool = False) -> TunnelError:
    rcvd = exc.rcvd
    code, reason = (rcvd.code, rcvd.reason) if rcvd else (1006, "connection lost")
    sent = exc.sent
    if sent is not None and sent.code == 1009 and not exc.rcvd_then_sent:  # we refused it
        return ProviderRefused(
            f"the provider at {url} sent a message over the tunnel's size limit "
            f"({sent.reason}); the link was closed (1009): the provider may be faulty or hostile"
        )
    if code == CloseCode.UNAUTHORIZED and paid:
        return AuthenticationFailed(f"the provider at {url} refused this lease's channel: {reason}")
    if code == CloseCode.UNAUTHORIZED:
        return AuthenticationFailed(
            f"the provider at {url} refused the credentials ({reason}): check "
            "GPUMARKET_DEV_TOKEN (or the provisioner's dev_token) against the provider's token"
        )
    if code in (CloseCode.CAPACITY, CloseCode.PROTOCOL):
        return ProviderRefused(f"the provider at {url} refused the connection: {reason}")
    if code == CloseCode.UNKNOWN_LEASE:
        return LinkLost(f"the provider at {url} no longer has this kernel ({reason})")
    return ProviderUnreachable(f"the provider at {url} closed the connection: {code} {reason}")


async def connect(
    target: ProviderTarget,
    settings: LinkSettings,
    hello: control.Hello,
    timeout: float,
    paid: Any = None,
) -> tuple[LinkSocket, Opened]:
    """A pinned websocket that went through the handshake; ``paid`` (provisioning.paid's
    PaidLease) answers a paid provider's challenge. The caller owns the connection."""
    url = target.url

    def unreachable(exc: BaseException) -> str:
        return f"cannot reach the provider at {url}: {exc}; check that it runs and the URL"

    def mismatch(shown: str) -> str:
        return (
            f"the provider at {url} presented certificate {shown}, not the "
            f"pinned {target.tls_fingerprint}: someone may be in the middle, or the "
            "provider made a new certificate — check GPUMARKET_TLS_FINGERPRINT against "
            "the provider's ready file or registry entry"
        )

    ws: LinkSocket
    if fastws.tunnel_ws() == "picows":
        ws = await fastws.connect_pinned(
            url,
            target.tls_fingerprint,
            unreachable=unreachable,
            mismatch=mismatch,
            open_timeout=timeout,
            max_size=settings.max_frame_bytes,
            max_queue=64,
            close_timeout=CLOSE_TIMEOUT,
        )
    else:
        ws = cast(
            CountingClientConnection,
            await connect_pinned(
                url,
                target.tls_fingerprint,
                unreachable=unreachable,
                mismatch=mismatch,
                open_timeout=timeout,
                max_size=settings.max_frame_bytes,
                compression=None,
                ping_interval=None,  # liveness is the pipe's, judged by progress
                close_timeout=CLOSE_TIMEOUT,
                max_queue=64,
                create_connection=CountingClientConnection,
            ),
        )
    hs = Handshake.renter(hello)
    try:
        await ws.send(hs.start())
        reply = hs.receive_text(await asyncio.wait_for(ws.recv(), timeout))
        if isinstance(reply, paymsgs.AuthChallenge):
            await ws.send(hs.answer(paid.answer(reply)))
            reply = hs.receive_text(await asyncio.wait_for(ws.recv(), timeout))
        assert isinstance(reply, Opened)
    except ConnectionClosed as exc:
        await ws.close()  # the refusal's TLS shutdown ends (bounded) before the caller goes on
        raise closed_error(exc, url, paid is not None) from None
    except LinkLost as exc:
        await ws.close()
        raise LinkLost(f"{exc} (at {url})") from None
    except (TimeoutError, ProtocolError) as exc:
        await ws.close()
        raise ProviderRefused(f"the provider at {url} did not answer the hello: {exc}") from exc
    except BaseException:
        await ws.close()
        raise
    return ws, reply
