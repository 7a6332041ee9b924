"""The challenge's messages round-trip, and hostile ones are refused before decoding."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core import challenge as ch
from jupyter_gpumarket.core import challenge_reference as ref
from jupyter_gpumarket.core import challenge_wire as wire
from jupyter_gpumarket.exceptions import ProtocolError

SPEC = ch.MatmulSpec(bytes(range(32)), 16, 3, "bf16", bytes(range(32, 64)))


@pytest.fixture(scope="module")
def honest():
    commit, products, sums = ref.reference_answer(SPEC)
    sample = ch.choose_sample(SPEC, b"e" * 32)
    return commit, sample, ref.reveal_for(sample, products, sums)


def test_the_whole_exchange_round_trips_and_verifies(honest):
    commit, sample, reveal = honest
    setup, go = SPEC.setup_json(), {"salt": SPEC.salt.hex()}
    assert ch.MatmulSpec.from_json({**setup, **go}) == SPEC
    c2 = wire.commit_from_json(wire.commit_to_json(commit), SPEC)
    s2 = wire.sample_from_json(wire.sample_to_json(sample), SPEC)
    r2 = wire.reveal_from_json(wire.reveal_to_json(reveal), SPEC, s2)
    assert ch.check_reveal(SPEC, c2, s2, r2).ok


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"round_digests": ["00" * 32] * 2},
        {"round_digests": ["zz" * 32] * 3},
        {"round_digests": [1, 2, 3]},
    ],
)
def test_bad_commits(bad):
    with pytest.raises(ProtocolError):
        wire.commit_from_json(bad, SPEC)


@pytest.mark.parametrize(
    "bad",
    [
        {"rows": [], "cols": []},
        {"rows": [[0, 16]], "cols": []},
        {"rows": [[3, 0]], "cols": []},
        {"rows": [[0, 1], [0, 1]], "cols": []},
        {"rows": [[0, 1]], "cols": [99]},
        {"rows": [[0, True]], "cols": []},
        {"rows": [[0, 1]] * 65, "cols": []},
        {"rows": [[0, 1]], "cols": list(range(300))},
    ],
)
def test_bad_samples(bad):
    with pytest.raises(ProtocolError):
        wire.sample_from_json(bad, SPEC)


def test_bad_reveals_are_refused_before_decoding(honest):
    _, sample, reveal = honest
    good = wire.reveal_to_json(reveal)
    r, i, b64 = good["rows"][0]
    cases = [
        {**good, "row_sums": {}},
        {**good, "rows": good["rows"][1:]},
        {**good, "rows": [[r, i, b64 + "AAAA"], *good["rows"][1:]]},
        {**good, "rows": [[r, i, "!" * len(b64)], *good["rows"][1:]]},
        {**good, "rows": [[r, (i + 1) % 16, b64], *good["rows"][1:]]},
        {**good, "rows": [good["rows"][0], *good["rows"][:-1]]},
        {**good, "rows": [[r, i, "A" * 10**6], *good["rows"][1:]]},
        {**good, "rows": [[[r], i, b64], *good["rows"][1:]]},
        "reveal",
    ]
    for bad in cases:
        with pytest.raises(ProtocolError):
            wire.reveal_from_json(bad, SPEC, sample)
    # the right length of a wrong matrix parses, and fails the check instead
    other = base64.b64encode(b"\0" * 64).decode()
    parsed = wire.reveal_from_json(
        {**good, "rows": [[r, i, other], *good["rows"][1:]]}, SPEC, sample
    )
    assert parsed.rows[(r, i)] == b"\0" * 64


def test_reveal_holds_only_bytes():
    with pytest.raises(ProtocolError):
        ch.Reveal({0: "text"}, {})  # type: ignore[dict-item]
    with pytest.raises(ProtocolError):
        ch.Reveal({0: 10**12}, {})  # type: ignore[dict-item]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_is_parsed_or_refused_with_protocol_error(data):
    for parse in (
        lambda d: wire.commit_from_json(d, SPEC),
        lambda d: wire.sample_from_json(d, SPEC),
    ):
        with contextlib.suppress(ProtocolError):
            parse(data)
