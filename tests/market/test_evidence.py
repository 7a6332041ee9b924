"""The market's evidence for ranking (no chain, no agents): kept challenge verdicts, bounded
and expiring, bound to the agent's certificate; attestations weighed into the level and the
reputation; the rating a finished lease gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_gpumarket.core.market_offer import MarketOffer, ProbeResult
from jupyter_gpumarket.core.offer_terms import PublishedTerms
from jupyter_gpumarket.core.reputation import Attestation
from jupyter_gpumarket.core.verification import ChallengeVerdict, Level
from jupyter_gpumarket.exceptions import ConfigError
from jupyter_gpumarket.market import challenge_cache
from jupyter_gpumarket.market.attest import rating_for
from jupyter_gpumarket.market.challenge_cache import ChallengeCache
from jupyter_gpumarket.market.evidence import weigh

TOKEN = "0x" + "ab" * 20
PROVIDER = "0x" + "01" * 20
FP = "sha256:" + "11" * 32


def _offer(oid: int = 1, model: str = "H100 SXM", price: int = 1_000) -> MarketOffer:
    terms = PublishedTerms(
        "wss://10.0.0.1:8443", FP, model, 1, 81920, price, TOKEN, "eu", ""
    )  # fmt: skip
    return MarketOffer(oid, PROVIDER, terms)


MATCH = {"verdict": "match", "reason": "ok", "lowp_tflops": 700.0, "fp32_of_peak": 0.8}


def test_a_kept_verdict_is_found_for_its_offer_and_certificate_only(tmp_path: Path) -> None:
    cache = ChallengeCache(tmp_path / "c.json")
    cache.record(1, FP, MATCH)
    verdicts = cache.verdicts()
    verdict, tflops = ChallengeCache.lookup(verdicts, 1, FP.upper()) or (None, None)
    assert verdict is not None
    assert verdict.result == "match"
    assert tflops == 700.0
    assert ChallengeCache.lookup(verdicts, 1, "sha256:" + "22" * 32) is None  # another machine
    assert ChallengeCache.lookup(verdicts, 2, FP) is None


def test_kept_verdicts_expire_and_are_bounded(tmp_path: Path, monkeypatch) -> None:
    now = [1_000_000.0]
    cache = ChallengeCache(tmp_path / "c.json", ttl_s=100, clock=lambda: now[0])
    monkeypatch.setattr(challenge_cache, "MAX_ENTRIES", 5)
    for i in range(8):
        now[0] += 1
        cache.record(i, FP, MATCH)
    assert sorted(int(k.split("|")[0]) for k in cache.verdicts()) == [3, 4, 5, 6, 7]
    now[0] += 101
    assert cache.verdicts() == {}


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"entries": []}',
        b'{"entries": {"1|x": {"verdict": "great", "reason": "", "at": 1e6}}}',
        b'{"entries": {"1|x": {"verdict": "match", "reason": 5, "at": 1e6}}}',
        b'{"entries": {"1|x": {"verdict": "match", "reason": "", "at": "now"}}}',
        b'{"entries": {"1|x": {"verdict": "match", "reason": "", "at": 9e9}}}',  # future
    ],
)
def test_a_broken_cache_file_keeps_nothing(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    cache = ChallengeCache(path, clock=lambda: 1_000_000.0)
    assert cache.verdicts() == {}
    cache.record(1, FP, MATCH)  # and is replaced by a good one
    assert json.loads(path.read_text())["entries"]


def _att(score: int, paid: int = 50_000, renter: str = "0x" + "02" * 20, tflops: int = 0):
    return Attestation(renter, PROVIDER, paid, score, tflops)


def test_evidence_moves_an_offer_up_the_ladder() -> None:
    offer = _offer()
    probe = {1: ProbeResult(1, True, latency_ms=5.0, free_kernels=1)}
    plain = weigh([offer], probe, {}, [])
    assert plain.assessments[1].level is Level.SELF_REPORTED
    challenged = weigh([offer], probe, {1: (ChallengeVerdict("match", "ok"), 700.0)}, [])
    assert challenged.assessments[1].level is Level.CHALLENGED
    assert challenged.measured == {1: 700.0}
    attested = weigh([offer], probe, {}, [_att(100, tflops=70_000)])
    assert attested.assessments[1].level is Level.ATTESTED
    assert attested.reputations[PROVIDER] > plain.reputations[PROVIDER]


def test_contradicting_evidence_is_a_mismatch() -> None:
    offer = _offer()
    bad = weigh([offer], {}, {1: (ChallengeVerdict("mismatch", "slow"), 50.0)}, [])
    assert bad.assessments[1].level is Level.MISMATCH
    assert bad.measured == {}  # a failed challenge's figure is no measurement
    below = weigh([offer], {}, {}, [_att(100, tflops=5_000)])  # 50 TFLOPS: not an H100's
    assert below.assessments[1].level is Level.MISMATCH
    low = weigh([offer], {}, {}, [_att(0)])
    assert low.assessments[1].level is Level.MISMATCH


def test_unpaid_or_self_attestations_do_not_count() -> None:
    offer = _offer()
    ignored = weigh([offer], {}, {}, [_att(100, paid=0), _att(100, renter=PROVIDER)])
    assert ignored.assessments[1].level is Level.SELF_REPORTED


@pytest.mark.parametrize(
    ("verdict", "tflops", "expected"),
    [
        (None, None, (100, 0)),
        ("match", 781.2, (100, 78_120)),
        ("cpu", 0.05, (100, 5)),
        ("mismatch", 12.0, (0, 1_200)),
        ("match", 1e9, (100, 2_000_000)),  # bounded as Escrow.attest bounds it
    ],
)
def test_the_rating_of_a_finished_lease(verdict, tflops, expected) -> None:
    r = rating_for(verdict, tflops)
    assert (r.score, r.measured_tflops_x100) == expected


def test_the_escrow_client_refuses_what_the_contract_would() -> None:
    from jupyter_gpumarket.chain.escrow import check_attestation

    for score, tflops in ((101, 0), (-1, 0), (50, 2_000_001), (True, 0), (50, 1.5)):
        with pytest.raises(ConfigError):
            check_attestation(score, tflops)
    check_attestation(100, 2_000_000)


class _Escrow:
    """An escrow whose channel goes through the given states, one per read."""

    def __init__(self, *states: str) -> None:
        self.states = list(states)
        self.calls: list[tuple] = []

    def channel(self, channel_id: bytes):
        from types import SimpleNamespace

        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return SimpleNamespace(state=state, pool_id=None)

    def attest(self, *args) -> None:
        self.calls.append(args)


def test_a_lease_is_rated_once_after_its_settle() -> None:
    from jupyter_gpumarket.market.attest import Rating, attest_when_settled

    escrow = _Escrow("open", "closing", "closed-paid")
    cid = b"\x07" * 32
    what = attest_when_settled(escrow, "renter", cid, Rating(100, 5), wait_s=5, poll_s=0.01)
    assert what.startswith("rated 100")
    assert escrow.calls == [("renter", cid, 100, 5)]
    again = attest_when_settled(escrow, "renter", cid, Rating(100, 5), wait_s=5, poll_s=0.01)
    assert again == "already rated by this process"
    assert len(escrow.calls) == 1
    done = _Escrow("attested")
    assert attest_when_settled(done, "r", b"\x08" * 32, Rating(1, 0)) == "already rated"
    assert done.calls == []
    never = _Escrow("open")
    what = attest_when_settled(never, "r", b"\x09" * 32, Rating(1, 0), wait_s=0.05, poll_s=0.01)
    assert what == "not rated: the channel is open"
    assert never.calls == []


def test_uptime_and_launches_add_up_per_provider() -> None:
    from jupyter_gpumarket.core.reputation import History

    a, b = _offer(1), _offer(2)
    steady = weigh([a, b], {}, {}, [], {1: History(50, 0), 2: History(50, 0)}, {})
    flaky = weigh([a, b], {}, {}, [], {1: History(10, 40), 2: History(0, 50)}, {2: History(1, 9)})
    assert steady.reputations[PROVIDER] > flaky.reputations[PROVIDER]


def test_probe_history_is_kept_bounded(tmp_path: Path, monkeypatch) -> None:
    from jupyter_gpumarket.market import history
    from jupyter_gpumarket.market.history import ProbeHistory

    monkeypatch.setattr(history, "MAX_OFFERS", 3)
    kept = ProbeHistory(tmp_path / "p.json")
    for _ in range(history.MAX_PROBES + 5):
        got = kept.record(
            [ProbeResult(1, True, latency_ms=1.0), ProbeResult(2, False, reason="down")]
        )
    assert (got[1].ok, got[1].failed) == (history.MAX_PROBES, 0)
    assert (got[2].ok, got[2].failed) == (0, history.MAX_PROBES)
    got = kept.record([ProbeResult(i, True, latency_ms=1.0) for i in (3, 4)])
    assert sorted(got) == [2, 3, 4]  # the least recently probed went first
    (tmp_path / "p.json").write_text('{"1": "0x1", "a": "1", "5": 7}')
    assert kept.record([]) == {}  # a broken file keeps nothing
