"""After a paid lease: the renter rates it on chain (Escrow.attest), from a daemon thread so
teardown never waits for the chain, once per channel.

.. code-block:: text

    lease ended, its kernel ran (billing started), something was paid, GPUMARKET_ATTEST != 0
      wait (bounded: WAIT_S) until the provider's settle closed the channel with a payment
      state closed-paid -> attest(score, measured TFLOPS x100)      state attested -> done already
      (not when a course pool paid the channel: the student's wallet has no gas to rate it)
      anything else after WAIT_S -> nothing (logged): the lease is not rated

The figures: the verdict `gpumarket offers verify` kept for this offer and certificate
(market/challenge_cache.py) gives the measured tensor-core TFLOPS and the score (100 when it
matched the claim or ran on the CPU a CPU offer claims, 0 when it did not); without one, a lease
whose kernel ran rates 100 with no figure (0). Figures are bounded as Escrow.attest bounds them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.chain.escrow import MAX_TFLOPS_X100, check_attestation
from jupyter_gpumarket.exceptions import GpuMarketError

__all__ = ["ATTEST_ENV", "Rating", "attest_when_settled", "rating_for", "start_attestation"]

log = logging.getLogger(__name__)

ATTEST_ENV = "GPUMARKET_ATTEST"  # "0" / "false" / "no": never rate leases
WAIT_S = 300.0  # the provider settles at the lease's end; after this the lease is not rated
POLL_S = 2.0

_attested: set[bytes] = set()  # channels this process rated (or is rating)
_lock = threading.Lock()


@dataclass(frozen=True)
class Rating:
    score: int  # 0..100
    measured_tflops_x100: int  # 0: no figure


def rating_for(verdict: str | None, lowp_tflops: float | None) -> Rating:
    """The rating of a lease whose kernel ran, from the kept challenge verdict (if any)."""
    score = 0 if verdict == "mismatch" else 100
    figure = 0
    if lowp_tflops is not None and lowp_tflops > 0:
        figure = min(MAX_TFLOPS_X100, round(lowp_tflops * 100))
    check_attestation(score, figure)
    return Rating(score, figure)


def attest_when_settled(
    escrow: Any,
    renter: Any,
    channel_id: bytes,
    rating: Rating,
    *,
    wait_s: float = WAIT_S,
    poll_s: float = POLL_S,
) -> str:
    """Attest once the channel is closed with a payment; what happened, in words."""
    with _lock:
        if channel_id in _attested:
            return "already rated by this process"
        _attested.add(channel_id)
    deadline = time.monotonic() + wait_s
    while True:
        info = escrow.channel(channel_id)
        state = info.state
        if state == "attested":
            return "already rated"
        if state == "closed-paid" and info.pool_id is not None:
            return "not rated: a course pool paid it (the student's wallet pays no gas)"
        if state == "closed-paid":
            escrow.attest(renter, channel_id, rating.score, rating.measured_tflops_x100)
            return f"rated {rating.score} ({rating.measured_tflops_x100 / 100:g} TFLOPS)"
        if state in ("none", "closed") or time.monotonic() >= deadline:
            return f"not rated: the channel is {state}"
        time.sleep(poll_s)


def _enabled() -> bool:
    return os.environ.get(ATTEST_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def start_attestation(lease: Any, kernel_ran: bool) -> threading.Thread | None:
    """Rate a finished PaidLease (provisioning.paid) from a daemon thread; None when there is
    nothing to rate or the renter opted out (``GPUMARKET_ATTEST=0``)."""
    if not _enabled() or not kernel_ran or lease.schedule.signed <= 0 or lease.renter is None:
        return None
    verdict, figure = None, None
    try:
        from jupyter_gpumarket.chain.profiles import active_profile, load_profile
        from jupyter_gpumarket.market.challenge_cache import ChallengeCache

        profile = load_profile(lease.network) if lease.network else active_profile()
        hit = ChallengeCache.lookup(
            ChallengeCache.for_profile(profile).verdicts(),
            lease.offer.offer_id,
            lease.offer.tls_fingerprint,
        )
        if hit is not None:
            verdict, figure = hit[0].result, hit[1]
    except (GpuMarketError, OSError) as exc:
        log.info("no kept challenge for offer %s: %s", lease.offer.offer_id, exc)
    rating = rating_for(verdict, figure)
    escrow, renter, channel_id = lease.chain.escrow, lease.renter, lease.channel_id

    def run() -> None:
        try:
            what = attest_when_settled(escrow, renter, channel_id, rating)
        except Exception as exc:  # a daemon thread: whatever the chain does, it only logs
            what = f"not rated: {exc}"
        log.info("lease on channel 0x%s: %s", channel_id.hex(), what)

    thread = threading.Thread(target=run, name="gpumarket-attest", daemon=True)
    thread.start()
    return thread
