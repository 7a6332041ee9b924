"""Ask a provider to open the renter's channel for it (the renter holds no gas).

One short wss connection, pinned like the tunnel: send the signed ``relay_open``, wait for the
mined channel (``relay_result``) or a close with the provider's reason. ``probe_provider`` makes
the same connection and nothing else, before any channel is opened.
"""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.auth_challenge import challenge_mismatch
from jupyter_gpumarket.exceptions import (
    AuthenticationFailed,
    PaymentError,
    ProtocolError,
    ProviderUnreachable,
)
from jupyter_gpumarket.pinned import pinned_connection

__all__ = ["probe_provider", "request_relay"]


def _pinned(
    url: str, tls_fingerprint: str, timeout: float, what: str
) -> contextlib.AbstractAsyncContextManager[ClientConnection]:
    """A wss connection to the provider whose certificate is the offer's pinned one."""
    return pinned_connection(
        url,
        tls_fingerprint,
        unreachable=lambda exc: f"the provider at {url} does not answer ({exc}); {what}",
        mismatch=lambda shown: (
            f"the provider at {url} presented certificate {shown}, not the "
            f"{tls_fingerprint} of its offer; {what}"
        ),
        open_timeout=timeout,
    )


async def request_relay(
    url: str, tls_fingerprint: str, req: paymsgs.RelayOpen, *, timeout: float = 90.0
) -> paymsgs.RelayResult:
    """The provider's answer: the channel it opened, or PaymentError with its reason."""
    what = "the signed opening was not sent"
    async with _pinned(url, tls_fingerprint, min(timeout, 30.0), what) as ws:
        try:
            await ws.send(control.dump(req).decode())
            async with asyncio.timeout(timeout):
                raw = await ws.recv()
        except TimeoutError:
            raise ProviderUnreachable(
                f"the provider at {url} did not relay the opening within {timeout:.0f} s; the "
                "signatures expire unused, nothing was spent — try again or fund the wallet"
            ) from None
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd else "connection lost"
            raise PaymentError(f"the provider did not open the channel: {reason}") from None
    try:
        return control.parse_text(raw, paymsgs.RelayResult)
    except ProtocolError as exc:
        raise PaymentError(f"the provider answered the relay request oddly: {exc}") from None


PROBE_CHANNEL = "0x" + "00" * 32  # names no channel: the agent answers with its challenge


async def probe_provider(
    url: str,
    tls_fingerprint: str,
    *,
    expected: tuple[str, int, str] | None = None,
    timeout: float = 10.0,
) -> None:
    """Reach the provider (wss handshake, pinned certificate) before any money moves: a
    channel opened to a provider that is down would lock the deposit until its challenge
    period ends. With ``expected`` = (the offer's provider, chain id, escrow), also send a
    hello naming no channel and check that the agent's challenge names that provider on that
    network: an offer that copied another provider's endpoint and certificate would take the
    deposit while the real agent refuses the channel. Nothing is signed. Raises
    ProviderUnreachable / TlsFingerprintMismatch / AuthenticationFailed."""
    what = "nothing was paid: pick another offer or try again later"
    async with _pinned(url, tls_fingerprint, timeout, what) as ws:
        if expected is None:
            return
        try:
            await ws.send(control.dump(control.Hello(token="", channel=PROBE_CHANNEL)).decode())
            async with asyncio.timeout(timeout):
                raw = await ws.recv()
            challenge = control.parse_text(raw, paymsgs.AuthChallenge)
        except TimeoutError:
            raise ProviderUnreachable(
                f"the provider at {url} did not send its challenge within {timeout:.0f} s; {what}"
            ) from None
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd else "connection lost"
            raise AuthenticationFailed(
                f"the agent at {url} did not say which provider it is ({reason}): it is not a "
                f"paid provider of this network; {what}"
            ) from None
        except ProtocolError as exc:
            raise AuthenticationFailed(
                f"the agent at {url} answered the probe oddly ({exc}); {what}"
            ) from None
    mismatch = challenge_mismatch(
        provider=challenge.provider,
        chain_id=challenge.chain_id,
        escrow=challenge.escrow,
        expected=expected,
    )
    if mismatch is not None:
        raise AuthenticationFailed(f"the offer at {url} is not what it claims: {mismatch}")
