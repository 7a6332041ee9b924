"""The agent's side of the market's pre-auth exchanges: the live ``probe`` and the seeded
``challenge`` (wire drawn in :mod:`~jupyter_gpumarket.core.market_msgs`).

A probe is answered with one small JSON message and the connection is closed; probes are
rate-limited per source address by :class:`~jupyter_gpumarket.core.probe_limit.ProbeLimiter`.
A challenge takes the GPU, so it is limited much harder: one at a time, a few per source and
minute, never while every kernel slot is busy; its compute runs in a worker thread (the event
loop keeps serving leases) and stops when the renter goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket._version import __version__
from jupyter_gpumarket.agent.challenge_compute import Backend, Cancelled, pick_backend
from jupyter_gpumarket.core import challenge as ch
from jupyter_gpumarket.core import challenge_wire as cw
from jupyter_gpumarket.core import safejson
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.market_msgs import (
    ChallengeRequest,
    ProbeRequest,
    probe_signing_message,
)
from jupyter_gpumarket.core.probe_limit import ProbeLimiter
from jupyter_gpumarket.core.vram_proof import VramSlices, VramSpec
from jupyter_gpumarket.exceptions import GpuMarketError, ProtocolError

__all__ = ["MarketDesk"]

log = logging.getLogger(__name__)

STEP_TIMEOUT = 30.0  # seconds the agent waits for the renter's next challenge message
MAX_COMPUTE_S = 300.0  # one step's compute (a bigger challenge is refused by its deadline)
MAX_STEP_BYTES = 16 * 1024
MAX_MATMULS = 4  # products per challenge connection (the renter sends FP32 and one low precision)
KEEP_PRODUCTS_BYTES = 512 * 1024 * 1024  # above this, the sampled rounds are recomputed
TRY_LATER = 1013
# a challenge takes the GPU for about a second: a few back to back, then one per 20 s per
# source and one per 5 s in all (probes: ProbeLimiter's defaults, 2/s per source)
CHALLENGE_LIMITS = {
    "per_source_rate": 1 / 20,
    "per_source_burst": 4,
    "global_rate": 1 / 5,
    "global_burst": 8,
}


class MarketDesk:
    """Answers probes and challenges for one agent. ``capacity()`` -> (free kernel slots, free
    GPUs); ``sign(message)`` -> (provider address, 0x signature), or None on a dev agent."""

    def __init__(
        self,
        *,
        info: dict[str, Any],
        fingerprint: str,
        capacity: Callable[[], tuple[int, int]],
        sign: Callable[[bytes], tuple[str, str] | None],
        probe_limiter: ProbeLimiter | None = None,
        challenge_limiter: ProbeLimiter | None = None,
    ) -> None:
        self.info, self.fingerprint = info, fingerprint
        self.capacity, self.sign = capacity, sign
        self.probes = probe_limiter or ProbeLimiter()
        self.challenges = challenge_limiter or ProbeLimiter(**CHALLENGE_LIMITS)
        self._busy = False
        self._backend: Backend | None = None

    async def handle(self, ws: ServerConnection, msg: ProbeRequest | ChallengeRequest) -> None:
        peer = ws.remote_address
        source = str(peer[0]) if peer else "unknown"
        if isinstance(msg, ProbeRequest):
            if not self.probes.allow(source, time.monotonic()):
                await ws.close(TRY_LATER, "probe rate limit: retry in a few seconds")
                return
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(self.probe_reply(msg.nonce), separators=(",", ":")))
                await ws.close()
            return
        await self._challenge(ws, msg, source)

    # -- probe -----------------------------------------------------------------------------
    def probe_reply(self, nonce: str) -> dict[str, Any]:
        free_kernels, free_gpus = self.capacity()
        inv = self.info.get("gpus_detected") or {}
        signed = self.sign(probe_signing_message(nonce, self.fingerprint))
        provider, signature = signed if signed is not None else (None, None)
        return {
            "op": "probe_reply",
            "version": __version__,
            "provider": provider,
            "signature": signature,
            "free_kernels": free_kernels,
            "free_gpus": free_gpus,
            "sandboxed": self.info.get("isolation") == "sandboxed",
            "isolation": str(self.info.get("isolation", "unknown")),
            "simulated": bool(self.info.get("simulated", False)),
            "slice": self.info.get("slice"),  # a shared GPU's slice (None: whole GPUs)
            "inventory": {
                "gpus": [
                    {"name": g.get("name"), "memory_total_bytes": g.get("memory_total_bytes")}
                    for g in inv.get("gpus", [])
                ],
                "driver_version": inv.get("driver_version"),
                "cuda_driver_version": inv.get("cuda_driver_version"),
            },
        }

    # -- challenge -------------------------------------------------------------------------
    async def _challenge(self, ws: ServerConnection, req: ChallengeRequest, source: str) -> None:
        if self._busy:
            await ws.close(TRY_LATER, "a challenge is running on this provider; retry later")
            return
        if self.capacity()[0] <= 0:
            await ws.close(CloseCode.CAPACITY, "every kernel slot is busy: no challenge now")
            return
        sliced = self.info.get("slice")  # a shared GPU: the challenge would use all of it
        if isinstance(sliced, dict) and self.capacity()[1] < sliced.get("count", 0):
            await ws.close(CloseCode.CAPACITY, "GPU slices are rented out: no challenge now")
            return
        if not self.challenges.allow(source, time.monotonic()):
            await ws.close(TRY_LATER, "challenge rate limit: retry in a minute")
            return
        self._busy = True
        try:
            if self._backend is None:
                # what the machine really has: a simulated GPU computes on whatever is there
                gpu = bool((self.info.get("gpus_detected") or {}).get("gpus"))
                self._backend = await asyncio.to_thread(pick_backend, gpu=gpu)
            await _Session(ws, self._backend).run(req.setup)
        except (ConnectionClosed, Cancelled, TimeoutError) as exc:
            log.info("challenge from %s ended early: %s", source, exc or type(exc).__name__)
            with contextlib.suppress(ConnectionClosed):
                await ws.close(CloseCode.PROTOCOL, "challenge ended early")
        except (ProtocolError, GpuMarketError) as exc:
            log.warning("challenge from %s refused: %s", source, exc)
            with contextlib.suppress(ConnectionClosed):
                await ws.close(CloseCode.PROTOCOL, _reason(str(exc)))
        except Exception:  # a bug here must cost one challenge, never the agent
            log.exception("challenge from %s: internal error", source)
            with contextlib.suppress(ConnectionClosed):
                await ws.close(1011, "internal error in the provider agent's challenge")
        finally:
            self._busy = False


class _Session:
    """One challenge connection: the steps of core.challenge and core.vram_proof in order."""

    def __init__(self, ws: ServerConnection, backend: Backend) -> None:
        self.ws, self.backend = ws, backend
        self.cancel = threading.Event()

    async def _recv(self, *ops: str) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), STEP_TIMEOUT)
        obj = safejson.loads(raw, "challenge step", max_bytes=MAX_STEP_BYTES)
        if not isinstance(obj, dict) or obj.get("op") not in ops:
            raise ProtocolError(f"expected one of {', '.join(ops)} in the challenge")
        return obj

    async def _send(self, op: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"op": op, **fields}, separators=(",", ":")))

    async def _work(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args, cancel)`` in a thread; cancelled when the renter leaves or it runs long."""
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args, self.cancel))
        closed = asyncio.ensure_future(self.ws.wait_closed())
        try:
            done, _ = await asyncio.wait(
                {work, closed}, timeout=MAX_COMPUTE_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed.cancel()
        if work not in done:
            self.cancel.set()
            with contextlib.suppress(Exception):
                await work
            raise Cancelled("the renter left or the step ran too long")
        return work.result()

    async def run(self, setup: dict[str, Any]) -> None:
        b = self.backend
        for _ in range(MAX_MATMULS):
            await self._matmul(setup)
            b.trim()  # the step's matrices are gone with its frame
            nxt = await self._recv("setup", "vram", "done")
            if nxt["op"] == "setup":
                setup = nxt.get("setup")  # type: ignore[assignment]
                continue
            if nxt["op"] == "vram":
                await self._vram(nxt)
                b.trim()
                nxt = await self._recv("done")
            log.info("challenge answered on %s (%s)", b.name, b.device)
            await self.ws.close()
            return
        raise ProtocolError(f"a challenge holds at most {MAX_MATMULS} products")

    async def _matmul(self, setup: Any) -> None:
        b = self.backend
        if not isinstance(setup, dict):
            raise ProtocolError("challenge setup must be an object")
        probe = ch.MatmulSpec.from_json({**setup, "salt": "00" * 16})  # validates the setup
        if probe.n > b.max_n or probe.flops > b.max_flops:
            raise ProtocolError(
                f"this provider computes on {b.name} ({b.device}): n={probe.n} x "
                f"{probe.rounds} rounds is more than it answers (n <= {b.max_n}, "
                f"{b.max_flops:.0e} flops)"
            )
        mats = await self._work(b.prepare, probe)
        await self._send("ready", backend=b.name, device=b.device)
        go = await self._recv("go")
        salt = go.get("salt")
        spec = ch.MatmulSpec.from_json({**setup, "salt": salt})
        keep = spec.n * spec.n * 4 * spec.rounds <= KEEP_PRODUCTS_BYTES
        products: dict[int, Any] = {}
        sums: dict[int, bytes] = {}

        def rounds(cancel: threading.Event) -> None:
            for r in range(spec.rounds):
                p = b.product(spec, mats, r, cancel)
                sums[r] = b.row_sums(p)
                if keep:
                    products[r] = p

        await self._work(lambda cancel: rounds(cancel))
        commit = ch.Commit(tuple(ch.round_digest(spec, r, sums[r]) for r in range(spec.rounds)))
        await self._send("commit", **cw.commit_to_json(commit))
        sample = cw.sample_from_json(await self._recv("sample"), spec)

        def reveal(cancel: threading.Event) -> ch.Reveal:
            rows: dict[tuple[int, int], bytes] = {}
            for r in sample.rounds:
                p = products[r] if r in products else b.product(spec, mats, r, cancel)
                wanted = [i for rr, i in sample.rows if rr == r]
                rows.update(zip(((r, i) for i in wanted), b.rows(p, wanted), strict=True))
            return ch.Reveal({r: sums[r] for r in sample.rounds}, rows)

        answer = await self._work(lambda cancel: reveal(cancel))
        await self._send("reveal", **cw.reveal_to_json(answer))
        products.clear()

    async def _vram(self, msg: dict[str, Any]) -> None:
        b = self.backend
        spec = VramSpec.from_json({k: v for k, v in msg.items() if k != "op"})
        if spec.fill_mib > b.max_fill_mib:
            await self._send(
                "vram_refused",
                reason=f"{spec.fill_mib} MiB is more than this {b.name} backend holds "
                f"({b.max_fill_mib} MiB)",
            )
            return
        try:
            buf = await self._work(b.fill, spec)
        except Cancelled:
            raise
        except Exception as exc:  # out of memory is an answer, not a crash
            await self._send("vram_refused", reason=_reason(f"fill failed: {exc}"))
            return
        await self._send("vram_ready")
        slices = VramSlices.from_json(await self._recv("slices"), spec)
        answers = [b.slice_digest(buf, o, slices.length) for o in slices.offsets]
        await self._send("answers", answers=[a.hex() for a in answers])


def _reason(text: str) -> str:
    return text.encode()[:120].decode(errors="ignore")
