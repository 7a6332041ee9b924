"""The market's live probe against real agents on loopback (dev agents started as processes) and
against hostile servers speaking TLS + websocket in this process: fields, dead / slow / full
agents, malformed and oversized replies, a probe flood, a copied endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from market_kit import dead_endpoint, hostile
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from jupyter_gpumarket.agent.gpu import detect_gpus
from jupyter_gpumarket.agent.tls import ensure_certificate
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.market_msgs import PROBE_REPLY_MAX_BYTES, probe_signing_message
from jupyter_gpumarket.market.probe import ProbeTarget, probe_endpoint, probe_many, probe_offer

from agentproc import AgentProcess, running_agent

pytestmark = pytest.mark.slow

Handler = Callable[[ServerConnection], Awaitable[None]]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("probed"), "--max-kernels", "3") as agent:
        yield agent


def answering(reply: str | bytes, **then: Any) -> Handler:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(reply)
        await asyncio.sleep(then.get("linger", 0))

    return handler


def probe(url: str, pin: str, **kw: Any) -> Any:
    return asyncio.run(probe_endpoint(url, pin, offer_id=7, **kw))


# -- a live dev agent ----------------------------------------------------------------------------


def test_probe_of_a_live_dev_agent_reports_what_it_detects(live: AgentProcess) -> None:
    report = probe(live.url, live.fingerprint)
    r = report.result
    assert r.reachable, r.reason
    assert r.offer_id == 7
    assert r.latency_ms is not None
    assert r.latency_ms > 0
    assert r.free_kernels == 3
    inv = detect_gpus()  # what agent/gpu.py detects on this machine (CPU only here: none)
    assert r.detected is not None
    assert list(r.detected.names) == [g.name for g in inv.gpus]
    assert r.free_gpus == len(inv.gpus)
    assert r.sandboxed is False
    assert report.isolation == "unsandboxed"
    assert report.simulated is False
    assert report.provider is None  # a dev agent signs nothing
    assert report.version
    assert report.driver_version == inv.driver_version


def test_probe_of_a_full_agent_says_no_free_kernel(tmp_path: Path) -> None:
    async def scenario(agent: AgentProcess) -> Any:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        async with connect(agent.url, ssl=ctx, compression=None) as ws:  # the only lease
            await ws.send(control.dump(control.Hello(token=agent.token)).decode())
            control.parse_welcome(await ws.recv())
            return await probe_endpoint(agent.url, agent.fingerprint, offer_id=1)

    with running_agent(tmp_path, "--max-kernels", "1") as agent:
        report = asyncio.run(scenario(agent))
    assert report.result.reachable
    assert report.result.free_kernels == 0


def test_probe_with_the_wrong_pin_is_unreachable(live: AgentProcess) -> None:
    r = probe(live.url, "sha256:" + "ab" * 32).result
    assert not r.reachable
    assert "pinned" in r.reason


def test_probe_of_a_dead_endpoint_is_unreachable_with_the_reason(tmp_path: Path) -> None:
    url, pin = dead_endpoint()
    r = probe(url, pin).result  # the agent stopped: nothing listens on its port
    assert not r.reachable
    assert "does not answer" in r.reason or "connection failed" in r.reason


def test_probe_of_a_slow_agent_times_out(tmp_path: Path) -> None:
    async def silent(ws: ServerConnection) -> None:
        await ws.wait_closed()  # never answers; ends when the renter gives up

    async def scenario() -> Any:
        async with hostile(tmp_path, silent) as (url, pin):
            return await probe_endpoint(url, pin, offer_id=3, timeout=0.5)

    r = asyncio.run(scenario()).result
    assert not r.reachable
    assert r.reason == "no answer within 0.5 s"


def test_probe_many_keeps_order_and_reports_each(live: AgentProcess, tmp_path: Path) -> None:
    dead_url, dead_pin = dead_endpoint()
    targets = [
        ProbeTarget(1, live.url, live.fingerprint),
        ProbeTarget(2, dead_url, dead_pin),
        ProbeTarget(3, live.url, live.fingerprint),
    ]
    results = asyncio.run(probe_many(targets, timeout=5.0, concurrency=2))
    assert [r.offer_id for r in results] == [1, 2, 3]
    assert [r.reachable for r in results] == [True, False, True]


# -- hostile replies -----------------------------------------------------------------------------

GOOD = {"op": "probe_reply", "free_kernels": 1, "free_gpus": 0, "inventory": {"gpus": []}}
MALFORMED = {
    "not json": "{{{",
    "not an object": "[1, 2, 3]",
    "wrong op": json.dumps({**GOOD, "op": "welcome"}),
    "negative slots": json.dumps({**GOOD, "free_kernels": -1}),
    "string slots": json.dumps({**GOOD, "free_kernels": "lots"}),
    "bool sandboxed as text": json.dumps({**GOOD, "sandboxed": "yes"}),
    "gpu without memory": json.dumps({**GOOD, "inventory": {"gpus": [{"name": "H100"}]}}),
    "too many gpus": json.dumps(
        {**GOOD, "inventory": {"gpus": [{"name": "H100", "memory_total_bytes": 1}] * 65}}
    ),
    "deep nesting": '{"op": "probe_reply", "x": ' + "[" * 5000 + "]" * 5000 + "}",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_probe_reply_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    async def scenario() -> Any:
        async with hostile(tmp_path, answering(MALFORMED[kind])) as (url, pin):
            return await probe_offer(url, pin, offer_id=9, expected_provider=None)

    r = asyncio.run(scenario())
    assert not r.reachable
    assert r.reason.startswith("bad probe reply:"), r.reason


@pytest.mark.parametrize("size", [PROBE_REPLY_MAX_BYTES + 1, 16 * 1024 * 1024])
def test_oversized_probe_reply_is_refused_unread(tmp_path: Path, size: int) -> None:
    sent: list[int] = []

    async def flood(ws: ServerConnection) -> None:
        await ws.recv()
        with contextlib.suppress(Exception):
            # one frame whose header says `size`: the renter refuses it before the payload
            await ws.send(b"\0" * size)
            sent.append(size)

    async def scenario() -> Any:
        async with hostile(tmp_path, flood) as (url, pin):
            return await probe_endpoint(url, pin, offer_id=4, timeout=10.0)

    r = asyncio.run(scenario()).result
    assert not r.reachable
    assert r.reason == f"probe reply larger than {PROBE_REPLY_MAX_BYTES} bytes (refused unread)"


# -- the provider's signature (paid offers) ------------------------------------------------------


def signing(key: Any, *, nonce: str | None = None, tls: str | None = None) -> Callable[..., Any]:
    """A server that answers as ``key``'s address, signing (a chosen) nonce and TLS pin."""

    def make(pin: str) -> Handler:
        async def handler(ws: ServerConnection) -> None:
            req = json.loads(await ws.recv())
            msg = probe_signing_message(nonce or req["nonce"], tls or pin)
            sig = key.sign_message(encode_defunct(primitive=msg)).signature
            reply = {**GOOD, "provider": key.address, "signature": "0x" + bytes(sig).hex()}
            await ws.send(json.dumps(reply))

        return handler

    return make


def test_probe_checks_the_provider_signature(tmp_path: Path) -> None:
    provider, other = Account.create(), Account.create()
    cases = {
        "honest": (signing(provider), provider.address, True),
        "another provider's key": (signing(other), provider.address, False),
        "replayed nonce": (signing(provider, nonce=secrets.token_hex(16)), provider.address, False),
        # a copied endpoint relaying the real provider's signed answer over its own certificate
        "other certificate": (signing(provider, tls="sha256:" + "0" * 64), provider.address, False),
        "no signature": (lambda pin: answering(json.dumps(GOOD)), provider.address, False),
    }

    async def scenario() -> dict[str, Any]:
        out = {}
        cert = ensure_certificate(tmp_path / "hostile-cert")
        for name, (make, expected, _) in cases.items():
            async with hostile(tmp_path, make(cert.fingerprint)) as (url, pin):
                out[name] = await probe_endpoint(url, pin, offer_id=5, expected_provider=expected)
        return out

    reports = asyncio.run(scenario())
    for name, (_, _, ok) in cases.items():
        r = reports[name]
        assert r.result.reachable is ok, (name, r.result.reason)
        if ok:
            assert r.provider == provider.address
        else:
            assert "bad probe reply" in r.result.reason, (name, r.result.reason)


# -- a probe flood -------------------------------------------------------------------------------


def test_probe_flood_is_rate_limited_and_others_still_get_in(live: AgentProcess) -> None:
    async def scenario() -> tuple[list[Any], Any]:
        flood = [
            await probe_endpoint(live.url, live.fingerprint, offer_id=i, timeout=5.0)
            for i in range(40)
        ]
        other = await probe_endpoint(
            live.url, live.fingerprint, offer_id=99, timeout=5.0, local_addr=("127.0.0.2", 0)
        )
        return flood, other

    flood, other = asyncio.run(scenario())
    limited = [r for r in flood if not r.result.reachable]
    assert len(limited) >= 20  # a burst of 5, then 2 per second
    assert all("rate-limited" in r.result.reason for r in limited), limited[0].result.reason
    assert other.result.reachable, other.result.reason  # another renter is not locked out
    assert live.proc.poll() is None
