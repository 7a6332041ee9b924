"""What the renter knows about each offer beyond its claim and its probe, for ranking: the
challenge verdicts `offers verify` kept (market/challenge_cache.py) and the renters'
attestations on chain (market/attestations.py), turned into each offer's assessment
(core.verification.assess), measured TFLOPS and its provider's reputation
(core.reputation.reputation).

Nothing here may stop a listing: an RPC that refuses logs or an unreadable cache leaves the
offers at the levels their claims and probes give (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from jupyter_gpumarket.chain.profiles import NetworkProfile
from jupyter_gpumarket.core.market_offer import MarketOffer, ProbeResult
from jupyter_gpumarket.core.reputation import (
    Attestation,
    History,
    reputation,
    summarize_attestations,
)
from jupyter_gpumarket.core.verification import (
    Assessment,
    ChallengeVerdict,
    assess,
    attested_band,
    compare_detected,
)
from jupyter_gpumarket.exceptions import GpuMarketError

__all__ = ["REFERENCE_HOURS", "Evidence", "gather", "weigh"]

log = logging.getLogger(__name__)

REFERENCE_HOURS = 10  # paid use (hours at the offer's price) that moves a reputation halfway


@dataclass(frozen=True)
class Evidence:
    """rank()'s keyword arguments: assessments and measured TFLOPS by offer id, reputations
    by provider address."""

    assessments: dict[int, Assessment] = field(default_factory=dict)
    measured: dict[int, float] = field(default_factory=dict)
    reputations: dict[str, float] = field(default_factory=dict)


def weigh(
    offers: Iterable[MarketOffer],
    probes: Mapping[int, ProbeResult],
    challenges: Mapping[int, tuple[ChallengeVerdict, float | None]],
    attestations: list[Attestation],
    probe_history: Mapping[int, History] | None = None,
    launch_history: Mapping[int, History] | None = None,
) -> Evidence:
    """Pure: the evidence for ``offers`` (``challenges`` by offer id, for the offer's current
    fingerprint). A provider's uptime and launches add up over its offers; without
    ``probe_history`` the probes of now are its history."""
    offers = list(offers)
    track: dict[str, tuple[History, History]] = {}
    for offer in offers:
        probe = probes.get(offer.offer_id)
        if probe_history is not None:
            probed = probe_history.get(offer.offer_id, History())
        else:
            probed = History() if probe is None else History.of([probe.reachable])
        launched = (launch_history or {}).get(offer.offer_id, History())
        was_p, was_l = track.get(offer.provider.lower(), (History(), History()))
        track[offer.provider.lower()] = (
            History(was_p.ok + probed.ok, was_p.failed + probed.failed),
            History(was_l.ok + launched.ok, was_l.failed + launched.failed),
        )
    out = Evidence()
    for offer in offers:
        probe = probes.get(offer.offer_id)
        nvml = None if probe is None else probe.detected
        found = None if nvml is None else compare_detected(offer.claim, nvml)
        challenge = challenges.get(offer.offer_id)
        reference = max(1, REFERENCE_HOURS * offer.terms.price_per_hour)
        summary = summarize_attestations(
            attestations,
            offer.provider,
            reference_amount=reference,
            expected_tflops=attested_band(offer.claim),
        )
        out.assessments[offer.offer_id] = assess(
            offer.claim,
            detected=found,
            challenge=None if challenge is None else challenge[0],
            attestations=summary,
        )
        if challenge is not None and challenge[1] and challenge[0].result != "mismatch":
            out.measured[offer.offer_id] = challenge[1]
        probed, launched = track[offer.provider.lower()]
        rep = reputation(
            probes=probed, launches=launched, attestations=summary, reference_amount=reference
        )
        key = offer.provider.lower()
        out.reputations[key] = min(out.reputations.get(key, 1.0), rep.score)
    return out


def gather(
    profile: NetworkProfile, offers: list[MarketOffer], probes: Mapping[int, ProbeResult]
) -> Evidence:
    """The evidence for ``offers`` from this renter's challenge cache and the chain."""
    from jupyter_gpumarket.market.attestations import AttestationIndex
    from jupyter_gpumarket.market.challenge_cache import ChallengeCache

    verdicts = ChallengeCache.for_profile(profile).verdicts()
    challenges = {}
    for offer in offers:
        hit = ChallengeCache.lookup(verdicts, offer.offer_id, offer.terms.tls_fingerprint)
        if hit is not None:
            challenges[offer.offer_id] = hit
    from jupyter_gpumarket.market.history import histories

    probed, launched = histories(profile, probes)
    attestations: list[Attestation] = []
    try:
        index = AttestationIndex(profile)
        index.refresh()
        attestations = index.attestations()
    except (GpuMarketError, OSError, ValueError) as exc:
        log.warning("no attestations read from %s: %s", profile.name, exc)
    return weigh(offers, probes, challenges, attestations, probed, launched)
