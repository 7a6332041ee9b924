"""The seeded matmul challenge: an honest CPU run verifies; tampering, another seed, a smaller
matrix and skipped rounds fail; the element stream is exact in every precision."""

from __future__ import annotations

import hashlib
import struct
from array import array
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpumarket.core import challenge as ch
from jupyter_gpumarket.core import challenge_reference as ref
from jupyter_gpumarket.core.seeded import derive_keys, mix32, stream_word
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

SEED = bytes(range(32))
SALT = bytes(range(100, 132))


def mk(seed, n, rounds=1, precision="fp32", salt=SALT):
    return ch.MatmulSpec(seed, n, rounds, precision, salt)


def honest(spec: ch.MatmulSpec, entropy: bytes = b"e" * 32):
    commit, products, sums = ref.reference_answer(spec)
    sample = ch.choose_sample(spec, entropy)
    return commit, sample, ref.reveal_for(sample, products, sums), products, sums


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_honest_cpu_run_verifies(precision):
    spec = mk(SEED, 24, rounds=3, precision=precision)
    commit, sample, reveal, _, _ = honest(spec)
    check = ch.check_reveal(spec, commit, sample, reveal)
    assert check.ok, check.reason
    assert check.max_error_ratio < 1
    assert len(sample.rounds) == 3
    assert len(sample.cols) == 16


def _to_bf16(x: float) -> float:
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round to nearest even
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def test_a_bf16_output_rounding_is_within_tolerance_but_fp32_is_not_that_loose():
    """A real BF16 matmul rounds its output to 8 bits: the bf16 spec accepts it."""
    spec = mk(SEED, 32, precision="bf16")
    _, products, _ = ref.reference_answer(spec)
    rounded = {0: [array("f", map(_to_bf16, row)) for row in products[0]]}
    sums = {0: ref.row_sums(rounded[0])}
    commit = ch.Commit((ch.round_digest(spec, 0, sums[0]),))
    sample = ch.choose_sample(spec, b"x" * 32)
    assert ch.check_reveal(spec, commit, sample, ref.reveal_for(sample, rounded, sums)).ok
    # the same bf16-rounded answer for an fp32 spec is caught (when rounding changed a value)
    spec32 = mk(SEED, 32, precision="fp32")
    _, p32, _ = ref.reference_answer(spec32)
    r32 = {0: [array("f", map(_to_bf16, row)) for row in p32[0]]}
    s32 = {0: ref.row_sums(r32[0])}
    c32 = ch.Commit((ch.round_digest(spec32, 0, s32[0]),))
    sample = ch.choose_sample(spec32, b"x" * 32, cols=32, rows_per_round=8)
    assert not ch.check_reveal(spec32, c32, sample, ref.reveal_for(sample, r32, s32)).ok


def test_a_tampered_row_fails():
    spec = mk(SEED, 24, rounds=2)
    commit, sample, reveal, products, _sums = honest(spec)
    r, i = sample.rows[0]
    row = array("f", products[r][i])
    row[sample.cols[0]] += 1.0
    rows = dict(reveal.rows)
    rows[(r, i)] = ch.encode_f32(row)
    check = ch.check_reveal(spec, commit, sample, ch.Reveal(reveal.row_sums, rows))
    assert not check.ok
    assert f"row {i}" in check.reason


def test_a_tampered_row_outside_the_sampled_columns_breaks_its_row_sum():
    spec = mk(SEED, 24)
    commit, sample, reveal, products, _ = honest(spec)
    r, i = sample.rows[0]
    j = next(j for j in range(spec.n) if j not in sample.cols)
    row = array("f", products[r][i])
    row[j] *= 3
    rows = dict(reveal.rows)
    rows[(r, i)] = ch.encode_f32(row)
    check = ch.check_reveal(spec, commit, sample, ch.Reveal(reveal.row_sums, rows))
    assert not check.ok
    assert "row sum" in check.reason


def test_row_sums_that_differ_from_the_commit_fail():
    spec = mk(SEED, 16)
    commit, sample, reveal, _, sums = honest(spec)
    bad = bytearray(sums[0])
    bad[0] ^= 1
    check = ch.check_reveal(spec, commit, sample, ch.Reveal({0: bytes(bad)}, reveal.rows))
    assert not check.ok
    assert "committed digest" in check.reason


def test_an_answer_computed_from_another_seed_fails():
    spec = mk(SEED, 16, rounds=2)
    other = mk(bytes(32), 16, rounds=2)
    _, products, sums = ref.reference_answer(other)
    # the cheat commits its own sums under the renter's spec, so the digests agree
    commit = ch.Commit(tuple(ch.round_digest(spec, r, sums[r]) for r in range(2)))
    sample = ch.choose_sample(spec, b"s" * 32)
    check = ch.check_reveal(spec, commit, sample, ref.reveal_for(sample, products, sums))
    assert not check.ok
    assert "the product is" in check.reason


def test_an_answer_computed_before_the_salt_was_known_fails():
    """Rounds precomputed with a guessed salt: the matrices are right, the signs are not."""
    spec = mk(SEED, 16, rounds=2)
    guess = mk(SEED, 16, rounds=2, salt=bytes(32))
    _, products, sums = ref.reference_answer(guess)
    commit = ch.Commit(tuple(ch.round_digest(spec, r, sums[r]) for r in range(2)))
    sample = ch.choose_sample(spec, b"s" * 32)
    check = ch.check_reveal(spec, commit, sample, ref.reveal_for(sample, products, sums))
    assert not check.ok
    assert "the product is" in check.reason


def test_rounds_differ_and_the_setup_does_not_depend_on_the_salt():
    spec = mk(SEED, 16, rounds=2)
    assert ch.matrix_keys(spec) == ch.matrix_keys(mk(SEED, 16, rounds=2, salt=bytes(32)))
    assert ch.round_signs(spec, 0) != ch.round_signs(spec, 1)
    assert set(ch.round_signs(spec, 0)) == {-1, 1}
    assert "salt" not in spec.setup_json()
    assert ref.reference_product(spec, 0) != ref.reference_product(spec, 1)
    with pytest.raises(ConfigError):
        ch.round_keys(spec, 2)


def test_a_result_from_a_smaller_matrix_fails_padded_or_not():
    spec = mk(SEED, 32)
    small = mk(SEED, 16)
    _, products, sums = ref.reference_answer(small)
    sample = ch.choose_sample(spec, b"s" * 32)
    # as is: wrong sizes
    commit = ch.Commit((ch.round_digest(spec, 0, sums[0]),))
    short = ch.Reveal({0: sums[0]}, {k: ch.encode_f32([0.0] * 16) for k in sample.rows})
    check = ch.check_reveal(spec, commit, sample, short)
    assert not check.ok
    assert "malformed" in check.reason
    # padded with zeros to the claimed size: wrong values
    padded = [array("f", list(products[0][i % 16]) * 2) for i in range(32)]
    psums = {0: ref.row_sums(padded)}
    commit = ch.Commit((ch.round_digest(spec, 0, psums[0]),))
    check = ch.check_reveal(spec, commit, sample, ref.reveal_for(sample, {0: padded}, psums))
    assert not check.ok


def test_skipped_rounds_are_caught_when_sampled():
    spec = mk(SEED, 16, rounds=4)
    commit, products, sums = ref.reference_answer(spec)
    fake = b"\0" * (4 * spec.n)
    lazy = ch.Commit((*commit.round_digests[:3], ch.round_digest(spec, 3, fake)))
    sample = ch.choose_sample(spec, b"s" * 32)  # rounds_checked=4 >= rounds: every round
    assert 3 in sample.rounds
    bad_products = dict(products)
    bad_products[3] = [array("f", [0.0] * spec.n)] * spec.n
    check = ch.check_reveal(
        spec, lazy, sample, ref.reveal_for(sample, bad_products, {**sums, 3: fake})
    )
    assert not check.ok
    assert "round 3" in check.reason


def test_a_reveal_that_answers_other_rows_fails():
    spec = mk(SEED, 16)
    commit, sample, _reveal, products, sums = honest(spec)
    other = ch.choose_sample(spec, b"z" * 32)
    assert other.rows != sample.rows
    check = ch.check_reveal(spec, commit, sample, ref.reveal_for(other, products, sums))
    assert not check.ok
    assert "does not answer" in check.reason


def test_commit_for_fewer_rounds_fails():
    spec = mk(SEED, 16, rounds=2)
    commit, sample, reveal, _, _ = honest(spec)
    check = ch.check_reveal(spec, ch.Commit(commit.round_digests[:1]), sample, reveal)
    assert not check.ok
    assert "2 rounds" in check.reason


def test_non_finite_rows_fail():
    spec = mk(SEED, 16)
    commit, sample, reveal, _products, _sums = honest(spec)
    rows = {k: ch.encode_f32([float("nan")] * 16) for k in reveal.rows}
    assert not ch.check_reveal(spec, commit, sample, ch.Reveal(reveal.row_sums, rows)).ok


@given(seed=st.binary(min_size=16, max_size=64), idx=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_elements_are_exact_in_every_precision(seed, idx):
    k = derive_keys(seed, b"t", 2)
    v = ch._value_int(k[0], k[1], idx) * 2.0**-10
    assert 0.125 <= abs(v) < 2
    frac = Fraction(v).limit_denominator(2**20)
    assert frac == Fraction(v)
    # 8 significant bits: exact in bf16 (and so in fp16, tf32, fp32)
    assert _to_bf16(v) == v
    # the inlined hot loop is the documented stream
    h = stream_word(k[0], k[1], idx)
    sign = -1 if (h >> 9) & 1 else 1
    assert v == sign * (128 + (h & 127)) * 2.0 ** -(7 + ((h >> 7) & 3))


def test_mix32_never_needs_more_than_63_bits():
    assert ch.MIX_A < 2**31
    assert ch.MIX_B < 2**31
    assert (2**32 - 1) * max(ch.MIX_A, ch.MIX_B) < 2**63
    assert mix32(0) == 0
    assert mix32(1) != 1


def test_reference_entry_matches_the_product_and_a_known_vector():
    spec = mk(SEED, 8)
    product = ref.reference_product(spec, 0)
    assert ch.reference_entry(spec, 0, 3, 5) == pytest.approx(product[3][5], rel=1e-6)
    # a fixed vector pins the spec: any change to the stream or the layout changes this digest
    digest = hashlib.sha256(ch.encode_f32([v for row in product for v in row])).hexdigest()
    assert digest == VECTOR


VECTOR = "4ef896c79fe0c9a6b0460c13adf674f12d2d733fad6869ac36d2f5eca9e7455b"


def test_the_spec_binds_every_field_and_parses_strictly():
    base = mk(SEED, 16)
    others = [
        mk(SEED, 16, salt=bytes(32)),
        mk(SEED, 17),
        mk(SEED, 16, 2),
        mk(SEED, 16, 1, "bf16"),
        mk(bytes(32), 16),
    ]
    assert len({base.ident, *(o.ident for o in others)}) == 6
    assert ch.MatmulSpec.from_json(base.to_json()) == base
    for bad in (
        {**base.to_json(), "n": 2**20},
        {**base.to_json(), "seed": "ab"},
        {**base.to_json(), "seed": "x" * 10_000},
        {**base.to_json(), "salt": "00" * 8},
        base.setup_json(),
        {**base.to_json(), "extra": 1},
        {**base.to_json(), "precision": "fp8"},
        [],
    ):
        with pytest.raises(ProtocolError):
            ch.MatmulSpec.from_json(bad)
    with pytest.raises(ConfigError, match="rounds"):
        mk(SEED, 16, 0)


def test_measured_tflops_uses_the_renters_clock_less_one_round_trip():
    spec = mk(SEED, 4096, rounds=10)
    assert ch.measured_tflops(spec, 0.050, 0.010) == pytest.approx(2 * 4096**3 * 10 / 0.040 / 1e12)
    assert ch.measured_tflops(spec, 0.001, 0.5) > 0  # never divides by zero or goes negative


def test_decode_refuses_wrong_sizes_before_reading():
    with pytest.raises(ProtocolError, match="expected 64 bytes"):
        ch.decode_f32(b"\0" * 65, 16)
    with pytest.raises(ProtocolError):
        ch.decode_f32("text", 1)  # type: ignore[arg-type]
