"""A provider's reputation: a pure function of its probe history, its launches and the on-chain
attestations of renters who paid it.

.. code-block:: text

    score = 0.35 · uptime + 0.25 · launch success + 0.40 · attestations      (each in [0, 1])

    uptime          (reachable probes + 1) / (probes + 2)        a new provider starts at 0.5
    launch success  (launches ok + 1) / (launches + 2)
    attestations    0.5 · (1 - c) + mean score · c,   c = W / (W + reference_amount)

``W`` is the money behind the attestations: each ``Attested`` event weighs what its channel
actually paid the provider (the event's ``paid``), nothing when the renter is the provider or
nothing was paid, and one renter's events together weigh at most ``reference_amount`` (so one
wallet cannot buy the whole score). An attestation whose measured TFLOPS fall below the claimed
model's band counts as score 0 and as a contradiction. Limits: a provider who pays itself through
a second wallet spends real tokens (it gets them back, minus gas and fees); the per-renter cap
bounds what each such wallet adds, and ``reference_amount`` (e.g. ten hours at the offer's price)
sets how much paid use it takes to move the score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "Attestation",
    "AttestationSummary",
    "History",
    "Reputation",
    "reputation",
    "summarize_attestations",
]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_UINT32 = 2**32


def _count(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{owner} {name} must be an integer >= 0, not {value!r}")


@dataclass(frozen=True)
class History:
    """Counts of successes and failures (probes answered / not; launches ok / failed)."""

    ok: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        _count("history", "ok", self.ok)
        _count("history", "failed", self.failed)

    @property
    def smoothed(self) -> float:
        """(ok + 1) / (total + 2): 0.5 with no history, approaching the observed rate."""
        return (self.ok + 1) / (self.ok + self.failed + 2)

    @classmethod
    def of(cls, outcomes: Sequence[bool]) -> History:
        ok = sum(1 for o in outcomes if o)
        return cls(ok, len(outcomes) - ok)


@dataclass(frozen=True)
class Attestation:
    """One ``Escrow.Attested`` event: the renter rated a closed, paid channel."""

    renter: str
    provider: str
    paid: int  # token base units the channel paid the provider
    score: int  # 0..100
    measured_tflops_x100: int = 0  # 0: no figure

    def __post_init__(self) -> None:
        for name in ("renter", "provider"):
            if not isinstance(getattr(self, name), str) or not _ADDRESS.fullmatch(
                getattr(self, name)
            ):
                raise ConfigError(f"attestation {name} must be a 0x address")
            object.__setattr__(self, name, getattr(self, name).lower())
        _count("attestation", "paid", self.paid)
        _count("attestation", "measured_tflops_x100", self.measured_tflops_x100)
        if self.measured_tflops_x100 >= _UINT32:
            raise ConfigError("attestation measured_tflops_x100 must fit a uint32")
        if (
            isinstance(self.score, bool)
            or not isinstance(self.score, int)
            or not 0 <= self.score <= 100
        ):
            raise ConfigError(f"attestation score must be 0..100, not {self.score!r}")

    @property
    def measured_tflops(self) -> float | None:
        return self.measured_tflops_x100 / 100 if self.measured_tflops_x100 else None


@dataclass(frozen=True)
class AttestationSummary:
    weight: int  # base units behind the counted attestations (after the per-renter cap)
    agree_weight: int
    mean_score: float  # weighted, in [0, 1]; 0.5 when weight is 0
    renters: int  # distinct paying renters counted
    ignored: int  # self-attestations, unpaid channels, other providers' events
    reason: str

    @property
    def verdict(self) -> bool | None:
        """True: agree (2/3 of the weight); False: most of the weight contradicts; else None."""
        if self.weight == 0:
            return None
        if 3 * self.agree_weight >= 2 * self.weight:
            return True
        if 2 * self.agree_weight < self.weight:
            return False
        return None


def summarize_attestations(
    attestations: Sequence[Attestation],
    provider: str,
    *,
    reference_amount: int,
    expected_tflops: tuple[float, float] | None = None,
) -> AttestationSummary:
    """Weigh ``provider``'s attestations by the money that flowed (see the module docstring).

    ``expected_tflops``: (low, high) band a measured figure must reach to agree (from
    ``verification.attested_band``); a figure below it contradicts the claim, above it is ignored.
    """
    if (
        isinstance(reference_amount, bool)
        or not isinstance(reference_amount, int)
        or reference_amount <= 0
    ):
        raise ConfigError(f"reference_amount must be a positive integer, not {reference_amount!r}")
    provider = provider.lower()
    per_renter: dict[str, list[Attestation]] = {}
    ignored = 0
    for a in attestations:
        if a.provider != provider or a.renter == provider or a.paid == 0:
            ignored += 1
            continue
        per_renter.setdefault(a.renter, []).append(a)
    weight = agree = 0
    score_sum = 0.0
    low = 0
    for items in per_renter.values():
        paid = sum(a.paid for a in items)
        scale = min(1.0, reference_amount / paid)
        for a in items:
            w = int(a.paid * scale)
            measured = a.measured_tflops
            below = (
                expected_tflops is not None
                and measured is not None
                and measured < expected_tflops[0]
            )
            low += below
            good = a.score >= 50 and not below
            weight += w
            agree += w if good else 0
            score_sum += w * (0 if below else a.score / 100)
    mean = score_sum / weight if weight else 0.5
    if not weight:
        reason = "no paid attestations" + (f" ({ignored} ignored)" if ignored else "")
    else:
        reason = (
            f"{len(per_renter)} paying renter(s), mean score {mean:.0%}"
            + (f", {low} measured below the model" if low else "")
            + (f", {ignored} ignored" if ignored else "")
        )
    return AttestationSummary(weight, agree, mean, len(per_renter), ignored, reason)


@dataclass(frozen=True)
class Reputation:
    score: float  # [0, 1]
    explanation: str
    uptime: float
    launch_success: float
    attestation: float


def reputation(
    *, probes: History, launches: History, attestations: AttestationSummary, reference_amount: int
) -> Reputation:
    """The score and a one-line explanation ("uptime 97% of 120 probes, 1 of 40 launches failed,
    3 paying renter(s), mean score 90%")."""
    confidence = attestations.weight / (attestations.weight + reference_amount)
    att = 0.5 * (1 - confidence) + attestations.mean_score * confidence
    uptime, launch = probes.smoothed, launches.smoothed
    score = min(1.0, max(0.0, 0.35 * uptime + 0.25 * launch + 0.40 * att))
    total = probes.ok + probes.failed
    parts = [
        f"uptime {probes.ok / total:.0%} of {total} probes" if total else "never probed",
        f"{launches.failed} of {launches.ok + launches.failed} launches failed"
        if launches.ok + launches.failed
        else "no launches yet",
        attestations.reason,
    ]
    return Reputation(score, ", ".join(parts), uptime, launch, att)
