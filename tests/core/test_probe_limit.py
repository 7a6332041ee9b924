"""The probe rate limiter: per source, global, bounded memory."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.probe_limit import ProbeLimiter
from jupyter_gpumarket.exceptions import ConfigError


def test_one_source_gets_its_burst_then_its_rate():
    lim = ProbeLimiter(per_source_rate=2, per_source_burst=5)
    assert [lim.allow("a", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert lim.allow("b", 0.0)  # another source is not affected
    assert not lim.allow("a", 0.25)
    assert lim.allow("a", 0.5)  # 2 per second: one token after 0.5 s
    assert not lim.allow("a", 0.5)


def test_a_flood_from_many_sources_hits_the_global_bucket():
    lim = ProbeLimiter(global_rate=100, global_burst=100)
    answered = sum(lim.allow(f"10.0.{i >> 8}.{i & 255}", 0.0) for i in range(5000))
    assert answered == 100
    assert sum(lim.allow(f"s{i}", 1.0) for i in range(500)) == 100  # refilled at 100/s


def test_memory_is_bounded():
    lim = ProbeLimiter(max_sources=50, global_burst=10**6, global_rate=10**6)
    for i in range(10_000):
        lim.allow(str(i), i * 1e-3)
    assert lim.sources == 50


def test_time_going_backwards_gives_nothing_extra():
    lim = ProbeLimiter(per_source_burst=1)
    assert lim.allow("a", 10.0)
    assert not lim.allow("a", 5.0)


def test_bad_settings():
    with pytest.raises(ConfigError, match="per_source_rate"):
        ProbeLimiter(per_source_rate=0)
