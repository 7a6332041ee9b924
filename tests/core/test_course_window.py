"""Course time windows: weekly slots in a named zone, DST followed, hostile text refused."""

from __future__ import annotations

import contextlib
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core.course_window import parse_window
from jupyter_gpumarket.exceptions import ConfigError

BERLIN = ZoneInfo("Europe/Berlin")


def _ts(y, mo, d, h, mi, tz=BERLIN) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=tz).timestamp())


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        ((2026, 11, 30, 10, 0), True),  # Monday, winter (UTC+1)
        ((2026, 11, 30, 11, 59), True),
        ((2026, 11, 30, 12, 0), False),  # the end is exclusive
        ((2026, 11, 30, 9, 59), False),
        ((2026, 12, 1, 10, 30), False),  # Tuesday
        ((2026, 6, 1, 10, 30), True),  # Monday, summer (UTC+2): still 10:00 local
        ((2026, 6, 1, 12, 30), False),
    ],
)
def test_a_monday_lecture_in_berlin(when, inside):
    assert parse_window("Mon 10:00-12:00 Europe/Berlin").open_at(_ts(*when)) is inside


def test_dst_moves_the_window_in_utc():
    w = parse_window("Mon 10:00-12:00 Europe/Berlin")
    winter = _ts(2026, 11, 30, 9, 30, ZoneInfo("UTC"))  # 10:30 Berlin
    summer = _ts(2026, 6, 1, 9, 30, ZoneInfo("UTC"))  # 11:30 Berlin
    late_summer = _ts(2026, 6, 1, 10, 30, ZoneInfo("UTC"))  # 12:30 Berlin
    assert w.open_at(winter)
    assert w.open_at(summer)
    assert not w.open_at(late_summer)


def test_closes_at_next_open_and_refusal():
    w = parse_window("Mon,Wed 10:00-12:00 Europe/Berlin; Mon 12:00-13:00 Europe/Berlin")
    t = _ts(2026, 11, 30, 11, 0)
    assert w.closes_at(t) == _ts(2026, 11, 30, 13, 0)  # back-to-back slots join
    after = _ts(2026, 11, 30, 14, 0)
    assert w.closes_at(after) is None
    assert w.next_open(after) == _ts(2026, 12, 2, 10, 0)
    assert w.refusal(t) is None
    refusal = w.refusal(after)
    assert refusal is not None
    assert "Wed 2026-12-02 09:00 UTC" in refusal


def test_empty_is_always_open():
    w = parse_window("")
    assert w.open_at(0)
    assert w.refusal(0) is None
    assert w.closes_at(0) is None


@pytest.mark.parametrize(
    "text",
    [
        "Mon",
        "Mon 10:00-12:00",
        "Xyz 10:00-12:00 UTC",
        "Mon 12:00-10:00 UTC",
        "Mon 10:00-10:00 UTC",
        "Mon 25:00-26:00 UTC",
        "Mon 10:61-11:00 UTC",
        "Mon 10:00-12:00 Mars/Olympus",
        "Mon 10:00-12:00 ../../etc/passwd",
        "Mon 10:00-12:00 /etc/localtime",
        "Mon 10:00-12:00 Europe/Berlin; x" * 40,
        "Mon 1:00-2:00 UTC",
    ],
)
def test_bad_windows_say_what_a_window_looks_like(text):
    with pytest.raises(ConfigError):
        parse_window(text)


@given(st.text(max_size=80))
def test_any_text_parses_or_is_a_config_error(text):
    with contextlib.suppress(ConfigError):
        parse_window(text)


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_open_iff_closes_later(ts):
    w = parse_window("Tue,Fri 08:00-09:30 America/New_York")
    end = w.closes_at(ts)
    assert (end is not None) == w.open_at(ts)
    if end is not None:
        assert end > ts
        assert not w.open_at(end)
    else:
        assert w.next_open(ts) > ts
