"""The renter's side of the seeded verification challenge (wire: core.market_msgs).

:func:`verify_offer` plans a challenge for the offer's claim (core.challenge_plan), drives it on
one pinned wss connection, checks the sampled rows (core.challenge.check_reveal) and the VRAM
slices (core.vram_proof), and returns core.verification.verify_json's dict. The verdict never
reads the offer's ``simulated`` label: a simulated GPU fails by what it cannot do.

Time: the renter's clock runs from sending ``go`` (the salt) to receiving ``commit``, less one
round trip measured by a websocket ping on the same connection before the challenge starts.
A step past its deadline (the claimed model at the bottom of its band, plus slack) ends the
challenge as ``timed_out``: a mismatch, not an error.

Errors: raises (ProviderUnreachable, TlsFingerprintMismatch, ProviderRefused) only when the
challenge could not run (agent down, wrong certificate, busy or rate-limited before it started);
everything the agent does wrong once it has accepted is a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import challenge as ch
from jupyter_gpumarket.core import challenge_wire as cw
from jupyter_gpumarket.core import safejson
from jupyter_gpumarket.core import vram_proof as vp
from jupyter_gpumarket.core.challenge_plan import ChallengePlan, plan_challenge
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.market_msgs import CHALLENGE_VERSION, MAX_AGENT_STEP_BYTES
from jupyter_gpumarket.core.pinning import normalize_fingerprint
from jupyter_gpumarket.core.verification import (
    ChallengeMeasurement,
    Claim,
    challenge_verdict,
    verify_json,
)
from jupyter_gpumarket.exceptions import ProtocolError, ProviderRefused, ProviderUnreachable
from jupyter_gpumarket.market.pinned import pinned_connection

__all__ = ["verify_offer"]


_NOT_RUN = (1013, CloseCode.CAPACITY)  # busy / rate-limited / full: the challenge never ran


@dataclass
class _Figures:
    backend: str = "unknown"
    rows_ok: bool = True
    rows_reason: str = ""
    tflops: dict[str, float] | None = None
    vram_proven_mib: int | None = None
    timed_out: bool = False


def _reply_cap(plan: ChallengePlan) -> int:
    """The largest message an honest agent sends for this plan (the reveal), in bytes."""
    biggest = 0
    for spec in (plan.fp32, plan.lowp):
        rows = min(8, spec.rounds) * 2  # choose_sample's defaults
        raw = 4 * spec.n * (min(8, spec.rounds) + rows)
        biggest = max(biggest, raw * 4 // 3 + 64 * rows + 4096)
    return max(biggest, MAX_AGENT_STEP_BYTES)


class _Driver:
    def __init__(
        self, ws: ClientConnection, plan: ChallengePlan, rtt_s: float, untimed_s: float
    ) -> None:
        # untimed_s: the wait for the untimed steps (matrix generation, recomputed reveals)
        self.ws, self.plan, self.rtt_s, self.untimed_s = ws, plan, rtt_s, untimed_s
        self.fig = _Figures(tflops={})

    async def send(self, op: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"op": op, **fields}, separators=(",", ":")))

    async def _recv(self, timeout: float, limit: int, *ops: str) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        obj = safejson.loads(raw, "challenge answer", max_bytes=limit)
        if not isinstance(obj, dict) or obj.get("op") not in ops:
            got = obj.get("op") if isinstance(obj, dict) else type(obj).__name__
            raise ProtocolError(f"expected {' or '.join(ops)} from the agent, got {got!r}")
        return obj

    async def matmul(self, spec: ch.MatmulSpec, deadline_s: float, first: bool) -> None:
        if first:
            await self.send("challenge", version=CHALLENGE_VERSION, setup=spec.setup_json())
        else:
            await self.send("setup", setup=spec.setup_json())
        ready = await self._recv(self.untimed_s, MAX_AGENT_STEP_BYTES, "ready")
        backend = ready.get("backend")
        if not isinstance(backend, str) or not 0 < len(backend) <= 32:
            raise ProtocolError("the agent's ready names no backend")
        self.fig.backend = backend
        start = time.perf_counter()
        await self.send("go", salt=spec.salt.hex())
        try:
            raw_commit = await self._recv(
                deadline_s, MAX_AGENT_STEP_BYTES + 70 * spec.rounds, "commit"
            )
        except TimeoutError:
            self.fig.timed_out = True
            raise
        elapsed = time.perf_counter() - start
        commit = cw.commit_from_json(raw_commit, spec)
        sample = ch.choose_sample(spec, secrets.token_bytes(32))
        await self.send("sample", **cw.sample_to_json(sample))
        cap = ch.max_reveal_bytes(spec, sample) * 4 // 3 + 64 * len(sample.rows) + 4096
        raw_reveal = await self._recv(self.untimed_s, cap, "reveal")
        reveal = cw.reveal_from_json(raw_reveal, spec, sample)
        check = await asyncio.to_thread(ch.check_reveal, spec, commit, sample, reveal)
        if not check.ok and self.fig.rows_ok:
            self.fig.rows_ok = False
            self.fig.rows_reason = f"{spec.precision}: {check.reason}"
        assert self.fig.tflops is not None
        self.fig.tflops[spec.precision] = ch.measured_tflops(spec, elapsed, self.rtt_s)

    async def vram(self, spec: vp.VramSpec) -> None:
        plan = self.plan
        await self.send("vram", **spec.to_json())
        try:
            answer = await self._recv(
                plan.vram_fill_deadline_s, MAX_AGENT_STEP_BYTES, "vram_ready", "vram_refused"
            )
        except TimeoutError:  # a fill this slow is no fill of the claimed memory
            self.fig.vram_proven_mib = 0
            return
        if answer["op"] == "vram_refused":
            self.fig.vram_proven_mib = 0
            return
        slices = vp.choose_slices(spec, secrets.token_bytes(32))
        start = time.perf_counter()
        await self.send("slices", **slices.to_json())
        try:
            raw = await self._recv(
                plan.vram_answer_deadline_s, MAX_AGENT_STEP_BYTES + 70 * 256, "answers"
            )
        except TimeoutError:
            self.fig.vram_proven_mib = 0
            return
        elapsed = time.perf_counter() - start
        answers = vp.answers_from_json(raw.get("answers"), slices)
        proof = await asyncio.to_thread(
            vp.vram_verdict, spec, slices, answers, elapsed, plan.vram_answer_deadline_s
        )
        # memory a CPU backend holds is host RAM, not the claimed GPU's memory: it proves no VRAM
        self.fig.vram_proven_mib = 0 if self.fig.backend == "cpu" else proof.proven_mib


async def _rtt(ws: ClientConnection) -> float:
    start = time.perf_counter()
    pong = await ws.ping()
    await pong
    return time.perf_counter() - start


def _sized(
    plan: ChallengePlan, n: int | None, rounds: int | None, fill: int | None
) -> ChallengePlan:
    """Tests and demos: the same plan with smaller matrices / fill (same precisions)."""
    if n is not None or rounds is not None:
        fp32 = ch.MatmulSpec.fresh(n or plan.fp32.n, rounds or plan.fp32.rounds, "fp32")
        lowp = ch.MatmulSpec.fresh(
            n or plan.lowp.n, rounds or plan.lowp.rounds, plan.lowp.precision
        )
        plan = replace(plan, fp32=fp32, lowp=lowp)
    if fill is not None and plan.vram is not None:
        plan = replace(plan, vram=vp.VramSpec.fresh(fill))
    return plan


async def verify_offer(
    endpoint: str,
    fingerprint: str,
    claim: Claim,
    *,
    timeout: float = 60.0,
    offer_id: int = 0,
    n: int | None = None,
    rounds: int | None = None,
    vram_fill_mib: int | None = None,
) -> dict[str, Any]:
    """Run the challenge against the agent at ``endpoint`` for ``claim``; verify_json's dict.
    ``n``, ``rounds``, ``vram_fill_mib`` override the plan's sizes (tests: small matrices;
    the timed steps then wait up to 30 s, the verdict still comes from the figures).
    ``timeout`` bounds the connection and each untimed step."""
    pin = normalize_fingerprint(fingerprint)
    began = time.perf_counter()
    first = _sized(plan_challenge(claim), n, rounds, vram_fill_mib)  # sizes do not depend on rtt
    async with contextlib.AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(min(timeout, 30.0)):
                ws = await stack.enter_async_context(
                    pinned_connection(endpoint, pin, max_size=_reply_cap(first))
                )
            rtt_s = await asyncio.wait_for(_rtt(ws), min(timeout, 10.0))
        except TimeoutError:
            raise ProviderUnreachable(
                f"the agent at {endpoint} did not answer within {min(timeout, 30.0):g} s"
            ) from None
        except ConnectionClosed as exc:
            raise ProviderUnreachable(f"the agent at {endpoint} closed at once: {exc}") from None
        deadlines = plan_challenge(claim, rtt_s=min(rtt_s, 59.0))
        plan = replace(
            deadlines,
            fp32=first.fp32,
            lowp=first.lowp,
            vram=first.vram,
            fp32_deadline_s=deadlines.fp32_deadline_s
            if n is None
            else max(deadlines.fp32_deadline_s, 30.0),
            lowp_deadline_s=deadlines.lowp_deadline_s
            if n is None
            else max(deadlines.lowp_deadline_s, 30.0),
        )
        drv = _Driver(ws, plan, rtt_s, timeout)
        try:
            await drv.matmul(plan.fp32, plan.fp32_deadline_s, first=True)
            await drv.matmul(plan.lowp, plan.lowp_deadline_s, first=False)
            if plan.vram is not None:
                await drv.vram(plan.vram)
            await drv.send("done")
        except TimeoutError:
            drv.fig.timed_out = True
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            if drv.fig.backend == "unknown" and rcvd is not None and rcvd.code in _NOT_RUN:
                raise ProviderRefused(
                    f"the agent at {endpoint} did not run the challenge: {rcvd.reason}; "
                    "try again in a minute"
                ) from None
            if rcvd is not None and rcvd.code == CloseCode.PROTOCOL and "bad hello" in rcvd.reason:
                raise ProviderRefused(
                    f"the agent at {endpoint} does not know the challenge (an older version): "
                    "it cannot be verified until its provider upgrades"
                ) from None
            reason = f"{rcvd.code} {rcvd.reason}" if rcvd else "connection lost"
            if exc.sent is not None and exc.sent.code == 1009:
                reason = "it sent a message larger than any honest answer (refused unread)"
            drv.fig.rows_ok, drv.fig.rows_reason = False, f"the agent stopped: {reason}"
        except ProtocolError as exc:
            drv.fig.rows_ok, drv.fig.rows_reason = False, f"malformed answer: {exc}"
    return _result(offer_id, claim, plan, drv.fig, time.perf_counter() - began)


def _result(
    offer_id: int, claim: Claim, plan: ChallengePlan, fig: _Figures, seconds: float
) -> dict[str, Any]:
    tflops = fig.tflops or {}
    lowp = plan.lowp.precision if plan.lowp.precision in ("bf16", "fp16") else "bf16"
    m = ChallengeMeasurement(
        backend=fig.backend[:32],
        rows_ok=fig.rows_ok,
        rows_reason=fig.rows_reason,
        fp32_tflops=tflops.get("fp32"),
        lowp_tflops=tflops.get(lowp),
        lowp_precision=lowp,
        vram_proven_mib=fig.vram_proven_mib,
        seconds=round(seconds, 3),
        timed_out=fig.timed_out,
    )
    return verify_json(offer_id, claim, m, challenge_verdict(claim, m))
