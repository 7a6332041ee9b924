"""Live probes of offers' agents: one pinned wss connection, one ``probe`` message, one reply.

The reply is hostile input: the connection accepts at most
:data:`~jupyter_gpumarket.core.market_msgs.PROBE_REPLY_MAX_BYTES` per message (a bigger one fails
the connection unread), the whole probe is bounded by ``timeout``, and the object is parsed by
:meth:`~jupyter_gpumarket.core.market_offer.ProbeResult.from_reply`. Whatever goes wrong, a
probe returns a :class:`ProbeResult` (``reachable=False`` with the reason); it never raises.

Latency: the time from sending the probe message to receiving the reply, on the already open
connection (TLS and the HTTP upgrade excluded): one application round trip, the figure a
kernel's messages will see. When ``expected_provider`` is given (paid offers), the reply must
carry that provider's signature over the probe's nonce and the certificate the renter pinned.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import safejson
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.market_msgs import PROBE_REPLY_MAX_BYTES, probe_signing_message
from jupyter_gpumarket.core.market_offer import ProbeResult
from jupyter_gpumarket.core.pinning import normalize_fingerprint
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError, ProtocolError
from jupyter_gpumarket.market.pinned import pinned_connection

__all__ = ["ProbeReport", "ProbeTarget", "probe_endpoint", "probe_many", "probe_offer"]

MAX_TEXT = 64


@dataclass(frozen=True)
class ProbeTarget:
    """One offer to probe: where its agent is, its pinned certificate, who must answer."""

    offer_id: int
    endpoint: str
    fingerprint: str
    expected_provider: str | None = None


@dataclass(frozen=True)
class ProbeReport:
    """A probe's result plus what the reply said beyond :class:`ProbeResult` (all None when
    the agent was not reached)."""

    result: ProbeResult
    version: str | None = None
    provider: str | None = None  # verified signer (paid agents), else None
    simulated: bool | None = None
    isolation: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    reply: dict[str, Any] | None = None  # the parsed reply (bounded), for --json views


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) else None


def _closed_reason(exc: ConnectionClosed) -> str:
    if exc.sent is not None and exc.sent.code == 1009:
        return f"probe reply larger than {PROBE_REPLY_MAX_BYTES} bytes (refused unread)"
    if exc.rcvd is not None:
        if exc.rcvd.code == 1013:
            return f"agent busy or rate-limited: {exc.rcvd.reason or 'try again later'}"
        if exc.rcvd.code == CloseCode.PROTOCOL and "bad hello" in exc.rcvd.reason:
            return "the agent does not answer probes (an older version): ask its provider"
        return f"agent closed the probe ({exc.rcvd.code} {exc.rcvd.reason})".strip()
    return "connection lost during the probe"


def _check_signer(reply: dict[str, Any], nonce: str, pin: str, expected: str) -> str:
    """The provider address that signed, or ProtocolError when it is not ``expected``."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    sig = reply.get("signature")
    if not isinstance(sig, str) or len(sig) > 140:
        raise ProtocolError("the agent did not sign the probe: it may not be the offer's provider")
    try:
        signer = Account.recover_message(
            encode_defunct(primitive=probe_signing_message(nonce, pin)),
            signature=bytes.fromhex(sig.removeprefix("0x")),
        )
    except Exception:  # any malformed signature is the same refusal
        raise ProtocolError("the probe's signature is malformed") from None
    if signer.lower() != expected.lower():
        raise ProtocolError(
            f"the agent answers as {signer}, not the offer's provider {expected}: "
            "its endpoint was copied into this offer"
        )
    return signer


async def _exchange(
    endpoint: str, pin: str, nonce: str, local_addr: tuple[str, int] | None
) -> tuple[Any, float]:
    extra = {} if local_addr is None else {"local_addr": local_addr}
    async with pinned_connection(endpoint, pin, max_size=PROBE_REPLY_MAX_BYTES, **extra) as ws:
        start = time.perf_counter()
        await ws.send(json.dumps({"op": "probe", "nonce": nonce}))
        raw = await ws.recv()
        latency_ms = (time.perf_counter() - start) * 1000.0
    return safejson.loads(raw, "probe reply", max_bytes=PROBE_REPLY_MAX_BYTES), latency_ms


async def probe_endpoint(
    endpoint: str,
    fingerprint: str,
    *,
    offer_id: int,
    expected_provider: str | None = None,
    timeout: float = 3.0,
    local_addr: tuple[str, int] | None = None,
) -> ProbeReport:
    """Probe one agent; never raises (an unreachable result carries the reason).
    ``local_addr``: the address to connect from (a multi-homed renter; tests)."""
    nonce = secrets.token_hex(16)
    try:
        pin = normalize_fingerprint(fingerprint)
        async with asyncio.timeout(timeout):
            reply, latency_ms = await _exchange(endpoint, pin, nonce, local_addr)
        if not isinstance(reply, dict) or reply.get("op") != "probe_reply":
            raise ProtocolError("the agent's answer is not a probe_reply")
        signer = None
        if expected_provider is not None:
            signer = _check_signer(reply, nonce, pin, expected_provider)
        result = ProbeResult.from_reply(offer_id, reply, round(latency_ms, 3))
    except TimeoutError:
        return ProbeReport(ProbeResult.unreachable(offer_id, f"no answer within {timeout:g} s"))
    except ConnectionClosed as exc:
        return ProbeReport(ProbeResult.unreachable(offer_id, _closed_reason(exc)))
    except ProtocolError as exc:
        return ProbeReport(ProbeResult.unreachable(offer_id, f"bad probe reply: {exc}"))
    except GpuMarketError as exc:
        return ProbeReport(ProbeResult.unreachable(offer_id, str(exc)))
    except OSError as exc:
        return ProbeReport(ProbeResult.unreachable(offer_id, f"connection failed: {exc}"))
    inv = reply.get("inventory") if isinstance(reply.get("inventory"), dict) else {}
    simulated = reply.get("simulated")
    return ProbeReport(
        result,
        version=_text(reply.get("version")),
        provider=signer,
        simulated=simulated if isinstance(simulated, bool) else None,
        isolation=_text(reply.get("isolation")),
        driver_version=_text(inv.get("driver_version")),
        cuda_driver_version=_text(inv.get("cuda_driver_version")),
        reply=reply,
    )


async def probe_offer(
    endpoint: str,
    fingerprint: str,
    *,
    offer_id: int,
    expected_provider: str | None,
    timeout: float = 3.0,
) -> ProbeResult:
    """Probe one offer's agent (see the module docstring); never raises."""
    report = await probe_endpoint(
        endpoint,
        fingerprint,
        offer_id=offer_id,
        expected_provider=expected_provider,
        timeout=timeout,
    )
    return report.result


async def probe_many(
    targets: Sequence[ProbeTarget], *, timeout: float = 3.0, concurrency: int = 64
) -> list[ProbeResult]:
    """Probe every target, at most ``concurrency`` at once; results in the targets' order."""
    if concurrency < 1:
        raise ConfigError("probe_many: concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(t: ProbeTarget) -> ProbeResult:
        async with gate:
            return await probe_offer(
                t.endpoint,
                t.fingerprint,
                offer_id=t.offer_id,
                expected_provider=t.expected_provider,
                timeout=timeout,
            )

    return list(await asyncio.gather(*(one(t) for t in targets)))
