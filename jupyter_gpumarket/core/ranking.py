"""Ranking offers for a renter: a pure function of the offers, their probes, the renter's
constraints and a policy.

.. code-block:: text

    for every active offer:
      outside the constraints (gpu, min_vram, max_price, region, provider) -> dropped
      not probed* / unreachable / full / mismatch / below the wanted level  -> returned, unusable
      otherwise                                                -> usable, ranked by the policy

    cheapest  (price, -level, VRAM slack, latency, -free kernels, -reputation, offer id)
    fastest   (-effective TFLOPS, latency, price, -level, offer id)
    value     (-(effective TFLOPS per million base units an hour) x (0.5 + 0.5 reputation),
               price, latency, offer id)

    * only when ``require_probe`` (the default): no channel is opened before a probe answered.

Effective TFLOPS of an offer: the tensor-core TFLOPS the challenge measured (``measured``), else
the table's dense peak discounted by how far the claim is verified (:data:`PEAK_DISCOUNT`), times
the GPU count; 0 for CPU offers and models the table does not know. The result is a list, usable
offers first in rank order (``position`` 1, 2, ...), then the unusable ones by offer id, each with
a one-line ``reason`` ("cheapest challenged H100 SXM within 40 ms"; "unreachable: timed out").
Every key ends with the offer id, so the order is total and the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.core.gpu_catalog import canonical_name, matches_gpu_query
from jupyter_gpumarket.core.gpu_slices import describe_slice
from jupyter_gpumarket.core.market_offer import Constraints, MarketOffer, Policy, ProbeResult
from jupyter_gpumarket.core.verification import Assessment, Level, assess, compare_detected
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["PEAK_DISCOUNT", "Ranked", "effective_tflops", "rank", "slice_json", "usable"]

# What the table's peak is worth before the challenge measured it (77-79 % is what an honest
# H100 reaches; an unverified claim may be a lie).
PEAK_DISCOUNT = {
    Level.ATTESTED: 0.75,
    Level.CHALLENGED: 0.75,
    Level.DETECTED: 0.6,
    Level.SELF_REPORTED: 0.3,
    Level.MISMATCH: 0.0,
}
_NEUTRAL_REPUTATION = 0.5


@dataclass(frozen=True)
class Ranked:
    """One offer in a ranking: usable ones carry their ``position`` (1 = the pick)."""

    offer: MarketOffer
    probe: ProbeResult | None
    assessment: Assessment
    reputation: float
    tflops: float
    usable: bool
    reason: str
    position: int = 0  # 0 for unusable offers

    def to_json(self) -> dict[str, Any]:
        """The fields ``gpumarket offers --json`` promises (others may be added, never removed)."""
        o, p, t = self.offer, self.probe, self.offer.terms
        return {
            "id": o.offer_id,
            "provider": o.provider,
            "endpoint": t.endpoint,
            "gpu_model": t.gpu_model,
            "gpu_class": o.gpu_class.name if o.gpu_class else None,
            "gpu_count": t.gpu_count,
            "vram_mib": t.vram_mb,
            "price_per_hour": t.price_per_hour,
            "region": t.region,
            "reachable": None if p is None else p.reachable,
            "latency_ms": None if p is None else p.latency_ms,
            "free_kernels": None if p is None else p.free_kernels,
            "verification": self.assessment.level.label,
            "labels": list(self.assessment.labels),
            "reputation": round(self.reputation, 4),
            "tflops": round(self.tflops, 1),
            "usable": self.usable,
            "position": self.position,
            "reason": self.reason,
            "simulated": o.simulated,
            "sandboxed": o.sandboxed if p is None or p.sandboxed is None else p.sandboxed,
            "slice": slice_json(o),
        }


def effective_tflops(offer: MarketOffer, level: Level, measured: float | None = None) -> float:
    """Per offer (all its GPUs): measured per-GPU TFLOPS if any, else the discounted peak."""
    if offer.cpu_only or level is Level.MISMATCH:
        return 0.0
    share = float(offer.slice.fraction) if offer.slice is not None else 1.0  # a shared GPU
    count = max(offer.terms.gpu_count, 1) * share
    if measured is not None and measured > 0:
        return measured * count
    cls = offer.gpu_class
    return 0.0 if cls is None else cls.lowp_tflops * PEAK_DISCOUNT[level] * count


def _in_constraints(offer: MarketOffer, c: Constraints) -> bool:
    t = offer.terms
    if c.gpu is not None:
        if c.gpu.strip().lower() == "cpu":
            if not offer.cpu_only:
                return False
        elif offer.gpu_class is not None:
            if not matches_gpu_query(c.gpu, offer.gpu_class):
                return False
        elif offer.cpu_only or canonical_name(t.gpu_model) != canonical_name(c.gpu):
            return False
    if offer.vram_mib < c.min_vram_mib:
        return False
    if c.max_price is not None and t.price_per_hour > c.max_price:
        return False
    if c.region is not None:
        want, have = c.region.strip().lower(), t.region.lower()
        if have != want and not have.startswith(want + "-"):
            return False
    return c.provider is None or offer.provider == c.provider


def _why_not(
    offer: MarketOffer,
    probe: ProbeResult | None,
    a: Assessment,
    c: Constraints,
    require_probe: bool,
) -> str | None:
    if probe is None:
        return "not probed yet" if require_probe else None
    if not probe.reachable:
        return f"unreachable: {probe.reason}"
    if probe.full_for(offer):
        free = (
            f"{probe.free_kernels} free kernels"
            if probe.free_kernels == 0
            else f"{probe.free_gpus} free GPUs"
        )
        return f"full: {free}"
    if a.level is Level.MISMATCH:
        return f"mismatch: {a.reason}"
    if a.level < c.min_level:
        return f"{a.level.label}, {c.min_level.label} or better wanted"
    return None


def _describe(r: Ranked) -> str:
    o = r.offer
    what = "CPU" if o.cpu_only else (o.gpu_class.name if o.gpu_class else o.terms.gpu_model)
    if o.terms.gpu_count > 1:
        what = f"{o.terms.gpu_count}x {what}"
    if o.slice is not None:
        what = describe_slice(o.slice, what)
    labels = "".join(f" ({label})" for label in r.assessment.labels if label != "cpu")
    where = (
        ""
        if r.probe is None or r.probe.latency_ms is None
        else f" within {r.probe.latency_ms:.0f} ms"
    )
    return f"{r.assessment.level.label} {what}{labels}{where}"


def _value(r: Ranked) -> float:
    per_price = r.tflops * 1e6 / max(r.offer.terms.price_per_hour, 1)
    return per_price * (0.5 + 0.5 * r.reputation)


def _key(policy: Policy, r: Ranked, min_vram: int) -> tuple[float | int, ...]:
    o, p = r.offer, r.probe
    latency = math.inf if p is None or p.latency_ms is None else p.latency_ms
    free = 0 if p is None or p.free_kernels is None else p.free_kernels
    level = int(r.assessment.level)
    price = o.terms.price_per_hour
    if policy is Policy.CHEAPEST:
        slack = o.vram_mib - min_vram
        return (price, -level, slack, latency, -free, -r.reputation, o.offer_id)
    if policy is Policy.FASTEST:
        return (-r.tflops, latency, price, -level, o.offer_id)
    return (-_value(r), price, latency, o.offer_id)


_HEAD = {Policy.CHEAPEST: "cheapest", Policy.FASTEST: "fastest", Policy.VALUE: "best value"}


def rank(
    offers: Iterable[MarketOffer],
    probes: Mapping[int, ProbeResult],
    constraints: Constraints,
    policy: Policy,
    *,
    assessments: Mapping[int, Assessment] | None = None,
    reputations: Mapping[str, float] | None = None,
    measured: Mapping[int, float] | None = None,
    require_probe: bool = True,
) -> list[Ranked]:
    """Rank ``offers`` (see the module docstring).

    ``probes``, ``assessments`` and ``measured`` (challenge TFLOPS per GPU) are keyed by offer
    id; ``reputations`` (scores in [0, 1]) by provider address. An offer without an assessment
    is assessed from its claim and its probe's NVML reading (self-reported or detected).
    """
    assessments = assessments or {}
    reputations = {k.lower(): v for k, v in (reputations or {}).items()}
    measured = measured or {}
    memo: dict[tuple[Any, ...], Assessment] = {}  # claims repeat: assess each kind once
    seen: set[int] = set()
    good: list[Ranked] = []
    bad: list[Ranked] = []
    for offer in offers:
        if offer.offer_id in seen:
            raise ConfigError(f"offer {offer.offer_id} is listed twice: rank each offer once")
        seen.add(offer.offer_id)
        if not offer.active or not _in_constraints(offer, constraints):
            continue
        probe = probes.get(offer.offer_id)
        a = assessments.get(offer.offer_id)
        if a is None:
            nvml = None if probe is None else probe.detected
            a = memo.get((offer.claim, nvml))
            if a is None:
                found = None if nvml is None else compare_detected(offer.claim, nvml)
                a = memo[(offer.claim, nvml)] = assess(offer.claim, detected=found)
        rep = reputations.get(offer.provider, _NEUTRAL_REPUTATION)
        if not 0 <= rep <= 1:
            raise ConfigError(f"reputation of {offer.provider} must be in [0, 1], not {rep!r}")
        why_not = _why_not(offer, probe, a, constraints, require_probe)
        tflops = effective_tflops(offer, a.level, measured.get(offer.offer_id))
        entry = Ranked(offer, probe, a, rep, tflops, why_not is None, why_not or "")
        (good if why_not is None else bad).append(entry)
    good.sort(key=lambda r: _key(policy, r, constraints.min_vram_mib))
    head = _HEAD[policy]
    for n, r in enumerate(good, 1):
        order = head if n == 1 else f"#{n} {head}"
        if policy is Policy.VALUE:
            extra = f" ({_value(r):.3g} TFLOPS per 1M base units/h)"
        elif policy is Policy.FASTEST:
            extra = f" (~{r.tflops:.0f} TFLOPS)"
        else:
            extra = ""
        # filled in place: the entry was made above and nothing else has seen it yet
        object.__setattr__(r, "position", n)
        object.__setattr__(r, "reason", f"{order} {_describe(r)}{extra}")
    bad.sort(key=lambda r: r.offer.offer_id)
    return good + bad


def usable(ranked: Iterable[Ranked]) -> list[Ranked]:
    """The offers that may be chosen, best first: the provisioner tries them in this order
    (the first, then ``failover`` more when a launch fails)."""
    return [r for r in ranked if r.usable]


def slice_json(offer: MarketOffer) -> dict[str, Any] | None:
    """``slice`` of ``gpumarket offers --json``: None for whole GPUs, else the share, the
    slice's VRAM, its MIG profile and the words to show ("1/4 of an A100 80GB, 20 GB")."""
    if offer.slice is None:
        return None
    gpu = offer.gpu_class.name if offer.gpu_class else offer.terms.gpu_model
    return {**offer.slice.to_json(), "label": describe_slice(offer.slice, gpu)}
