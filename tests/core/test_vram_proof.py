"""The VRAM proof: honest answers prove the fill; a partial fill, another seed, a late answer or
a short answer prove nothing."""

from __future__ import annotations

import hashlib

import pytest

from jupyter_gpumarket.core import vram_proof as vp
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

SPEC = vp.VramSpec(bytes(range(32)), 68_000)


def answers(spec, slices, filled_words=None):
    out = []
    for off in slices.offsets:
        if filled_words is not None and off + slices.length > filled_words:
            out.append(hashlib.sha256(b"\0" * 4 * slices.length).digest())  # never written
        else:
            out.append(vp.slice_answer(spec, off, slices.length))
    return out


def test_honest_answers_prove_the_fill():
    slices = vp.choose_slices(SPEC, b"e" * 32, count=8, length=256)
    proof = vp.vram_verdict(SPEC, slices, answers(SPEC, slices), 0.05, 1.0)
    assert proof.proven_mib == 68_000
    assert "right in time" in proof.reason


def test_slices_cover_the_whole_fill():
    slices = vp.choose_slices(SPEC, b"e" * 32, count=32, length=1024)
    assert all(0 <= o <= SPEC.words - 1024 for o in slices.offsets)
    assert max(slices.offsets) > SPEC.words * 0.9
    assert min(slices.offsets) < SPEC.words * 0.1


def test_an_agent_that_filled_half_the_memory_fails():
    slices = vp.choose_slices(SPEC, b"e" * 32, count=8, length=256)
    proof = vp.vram_verdict(SPEC, slices, answers(SPEC, slices, SPEC.words // 2), 0.05, 1.0)
    assert proof.proven_mib == 0
    assert "wrong checksum" in proof.reason


def test_another_seed_or_size_fails():
    slices = vp.choose_slices(SPEC, b"e" * 32, count=4, length=64)
    for other in (vp.VramSpec(bytes(32), 68_000), vp.VramSpec(SPEC.seed, 34_000)):
        proof = vp.vram_verdict(SPEC, slices, answers(other, slices), 0.05, 1.0)
        assert proof.proven_mib == 0


def test_late_or_short_answers_fail():
    slices = vp.choose_slices(SPEC, b"e" * 32, count=4, length=64)
    good = answers(SPEC, slices)
    assert vp.vram_verdict(SPEC, slices, good, 2.5, 1.0).proven_mib == 0
    assert "deadline" in vp.vram_verdict(SPEC, slices, good, 2.5, 1.0).reason
    assert vp.vram_verdict(SPEC, slices, good[:3], 0.1, 1.0).proven_mib == 0
    assert vp.vram_verdict(SPEC, slices, [*good[:3], "x"], 0.1, 1.0).proven_mib == 0


def test_fill_words_match_the_documented_formula():
    k1, k2 = SPEC.keys
    w = (3 << 32) + 17
    expected = vp.mix32(vp.mix32(17 ^ k1) ^ ((k2 + 3 * 0x9E37) & vp.MASK32))
    assert vp.fill_word(SPEC, w) == expected


def test_fill_size_and_spec_parsing():
    assert vp.fill_mib_for(81_559) == 69_325
    assert vp.fill_mib_for(1) == 1
    with pytest.raises(ConfigError):
        vp.fill_mib_for("80GB")  # type: ignore[arg-type]
    assert vp.VramSpec.from_json(SPEC.to_json()) == SPEC
    for bad in ({"seed": "00" * 32, "fill_mib": 2**40}, {"seed": "zz", "fill_mib": 1}, [], {}):
        with pytest.raises(ProtocolError):
            vp.VramSpec.from_json(bad)
    with pytest.raises(ConfigError):
        vp.choose_slices(SPEC, b"e", count=10_000)


def test_wire_forms_round_trip_and_refuse_hostile_input():
    slices = vp.choose_slices(SPEC, b"e" * 32, count=4, length=64)
    assert vp.VramSlices.from_json(slices.to_json(), SPEC) == slices
    good = answers(SPEC, slices)
    assert vp.answers_from_json(vp.answers_to_json(good), slices) == good
    for bad in (
        {"offsets": [SPEC.words], "length": 1},
        {"offsets": [-1], "length": 1},
        {"offsets": [0] * 300, "length": 1},
        {"offsets": [0], "length": 2**20},
        {"offsets": [0], "length": True},
        [],
    ):
        with pytest.raises(ProtocolError):
            vp.VramSlices.from_json(bad, SPEC)
    for bad in ([], ["zz" * 32] * 4, [1, 2, 3, 4], ["00" * 33] * 4, "00"):
        with pytest.raises(ProtocolError):
            vp.answers_from_json(bad, slices)
