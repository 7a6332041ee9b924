"""Course state, rosters and terms: hostile text refused with what to do."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.course import (
    Course,
    ReportRow,
    StudentGrant,
    course_terms,
    parse_roster,
    parse_terms,
    report_csv,
)
from jupyter_gpumarket.exceptions import ConfigError

A = "0x" + "11" * 20


def _course(**kw):
    base = {
        "name": "cs101",
        "network": "devnet",
        "chain_id": 31337,
        "escrow": A,
        "pool_id": "0x" + "22" * 32,
        "admin": A,
        "per_student": 5,
        "expires": 99,
    }
    return Course(**{**base, **kw})


def test_roster_rows_by_student_or_email():
    rows = parse_roster("Email,Student\nada@x,Ada\nbob@x,\n,\n")
    assert rows == [("Ada", "ada@x"), ("bob@x", "bob@x")]
    assert parse_roster("\ufeffstudent\nAda\n".lstrip("\ufeff")) == [("Ada", "")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name\nAda\n", "column"),
        ("student\n", "no students"),
        ("student\nAda\nada\n", "twice"),
        ("student\n" + "x" * 300 + "\n", "too long"),
        ("student\nA\x07da\n", "control"),
        ("student\n" + "a\n" * (1 << 20), "1 MiB"),
    ],
)
def test_bad_rosters(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_roster(text)


def test_state_round_trip_and_lookup():
    g = StudentGrant("Ada", "ada@x", A, "0x" + "33" * 32, 5, 99, "0x" + "00" * 20)
    course = _course(students=(g,), window="Mon 10:00-12:00 UTC", providers=(A,))
    back = Course.from_json(course.to_json())
    assert back == course
    assert back.student("ada@x") is back.students[0]
    with pytest.raises(ConfigError, match="no student"):
        back.student("eve")


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "../x"},
        {"name": ""},
        {"window": "every day"},
        {"pool_id": "0x12"},
        {"providers": ("nope",)},
    ],
)
def test_damaged_state_is_refused(bad):
    with pytest.raises(ConfigError):
        _course(**bad)


def test_terms_round_trip_and_hostile_terms():
    text = course_terms(window="Mon 10:00-12:00 UTC", gpu="A100", max_price=9, providers=(A,))
    t = parse_terms(text)
    assert (t.window, t.gpu, t.max_price, t.providers) == ("Mon 10:00-12:00 UTC", "A100", 9, (A,))
    for hostile in ("[]", "{", '{"max_price": -1}', '{"window": 5}', '{"providers": ["x"]}'):
        with pytest.raises(ConfigError):
            parse_terms(hostile)
    with pytest.raises(ConfigError, match="too long"):
        course_terms(window="", gpu="", max_price=0, providers=(A,) * 20)


def test_report_csv_neutralizes_formulas():
    row = ReportRow("=HYPERLINK()", "", 5, 0, 5, 0, 0)
    out = report_csv([row])
    assert out.splitlines() == [
        "student,address,cap,spent,remaining,leases,seconds",
        "'=HYPERLINK(),,5,0,5,0,0",
    ]


def test_a_reissued_student_is_found_by_the_live_code():
    old = StudentGrant("Ada", "ada@x", A, "0x" + "33" * 32, 5, 99, "0x" + "00" * 20, revoked=True)
    new = StudentGrant("Ada", "ada@x", A, "0x" + "44" * 32, 5, 99, "0x" + "00" * 20)
    course = _course(students=(old, new))
    assert course.student("Ada") is new
