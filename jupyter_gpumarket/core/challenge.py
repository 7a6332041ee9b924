"""The seeded matmul challenge: what the agent computes, what it answers, how the renter checks.

Who does what (the I/O shells on both ends drive these steps; nothing here touches a socket):

.. code-block:: text

    renter                                          agent
    spec = MatmulSpec.fresh(n, rounds, precision)
                        ── spec.setup_json() ──►    A, B from the seed (matrix_keys)   untimed
                        ◄── ready ──
    (start the clock)   ── spec.salt ──►            for r in range(rounds):
                                                      sign_r from the salt (round_signs)
                                                      C_r = (A · diag sign_r) @ B   (precision)
                                                      s_r[i] = Σ_j C_r[i, j]²    (float32)
                        ◄── Commit ──                 d_r = round_digest(spec, r, s_r bytes)
    (stop the clock: elapsed bounds the work, see measured_tflops)
    sample = choose_sample(spec, secrets.token_bytes(32))
                        ── sample ──►
                        ◄── Reveal ──               s_r and the rows C_r[i] of the sample
    check_reveal(spec, commit, sample, reveal) -> RowCheck(ok, reason)

**Matrices.** Element ``[i, k]`` of ``A`` is stream word ``i*n + k`` keyed by
``matrix_keys(spec)[0:2]``; element ``[k, j]`` of ``B`` is word ``k*n + j`` keyed by ``[2:4]``
(:mod:`~jupyter_gpumarket.core.seeded`). A word ``h`` becomes the value
``±(128 + (h & 127)) · 2**-(7 + ((h >> 7) & 3))`` (minus when bit 9 is set): in [1/8, 2), exact
in FP32, TF32, BF16 and FP16 alike, so every precision multiplies the very same matrices, and the
renter's reference (:func:`reference_entry`) is exact (integers). With torch::

    h = mix(mix(idx ^ k1) ^ k2)  # idx = torch.arange(n * n, dtype=torch.int64); mix: see seeded
    v = (128 + (h & 127)).float() * torch.exp2(-(7 + ((h >> 7) & 3)).float())
    v = torch.where((h >> 9) & 1 == 1, -v, v).reshape(n, n).to(dtype)

Round ``r`` flips the signs of ``A``'s columns: ``sign_r[k]`` is -1 when word ``k`` of the stream
keyed by ``round_keys(spec, r)`` is odd, else +1. The flips cost the agent ``n²`` per round (no
new matrices), but every round is a different product (``A D_r B``: no shortcut but a matmul),
and they come from the salt, sent only when the clock starts: nothing can be computed ahead.

**Answer.** ``s_r`` is the float32 sum of squares of each output row (of the output converted to
float32), sent as little-endian float32 bytes only when revealed; the commit carries SHA-256
digests of them. The row sums cannot be had without the product (``A D_r (B Bᵀ) D_r Aᵀ`` costs a
matmul too), and they bind every revealed row to what was committed before the sample was known.

**Check.** For each sampled (round, row): the revealed ``s_r`` hashes to ``d_r``; the revealed
row's sum of squares equals ``s_r[row]`` within float32 summation error; and the row's entries in
the sampled columns equal the exact product within the rounding bound of the precision
(:func:`entry_tolerance`). A tampered row, another seed or salt, a smaller matrix or skipped
rounds fail (a cheat that skips a fraction ``f`` of the rounds passes with probability about
``(1-f)**rounds_checked``).
"""

from __future__ import annotations

import hashlib
import math
import operator
import secrets
import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jupyter_gpumarket.core.f32codec import decode_f32, encode_f32
from jupyter_gpumarket.core.seeded import MASK32, MIX_A, MIX_B, derive_keys, stream_word
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

__all__ = [
    "Commit",
    "MatmulSpec",
    "Reveal",
    "RowCheck",
    "Sample",
    "check_reveal",
    "choose_sample",
    "decode_f32",
    "encode_f32",
    "entry_tolerance",
    "matrix_keys",
    "max_reveal_bytes",
    "measured_tflops",
    "reference_entry",
    "round_digest",
    "round_keys",
    "round_signs",
]

VERSION = b"gpumarket/challenge/v1"
MIN_N, MAX_N = 8, 16384  # n*n words must fit 32 bits; FP16 sums stay below 65504 in practice
MAX_ROUNDS = 1024
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# Unit roundoff of the output format (the product is rounded to it once).
_U_OUT = {"fp32": 2.0**-24, "tf32": 2.0**-24, "bf16": 2.0**-8, "fp16": 2.0**-11}
# Accumulation: FP32 everywhere; tensor cores' internal alignment may lose ~2 bits more.
_U_ACC = {"fp32": 2.0**-24, "tf32": 2.0**-22, "bf16": 2.0**-22, "fp16": 2.0**-22}
_SCALE = 2.0**-10  # a value is an integer times 2**-10 (see _value_int)


@dataclass(frozen=True)
class MatmulSpec:
    """One challenge: ``rounds`` products of seeded ``n`` x ``n`` matrices in ``precision``.

    ``seed`` makes the matrices (sent first, untimed); ``salt`` makes each round's signs (sent
    when the renter starts its clock). Both are 16 to 64 random bytes chosen by the renter."""

    seed: bytes
    n: int
    rounds: int
    precision: str
    salt: bytes

    def __post_init__(self) -> None:
        for name in ("seed", "salt"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or not 16 <= len(value) <= 64:
                raise ConfigError(f"challenge {name} must be 16 to 64 bytes")
        for name, value, lo, hi in (
            ("n", self.n, MIN_N, MAX_N),
            ("rounds", self.rounds, 1, MAX_ROUNDS),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(
                    f"challenge {name} must be an integer in [{lo}, {hi}], not {value!r}"
                )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"challenge precision must be one of {PRECISIONS}, not {self.precision!r}"
            )

    @classmethod
    def fresh(cls, n: int, rounds: int = 1, precision: str = "fp32") -> MatmulSpec:
        """A spec with a new random seed and salt (the renter's side)."""
        return cls(secrets.token_bytes(32), n, rounds, precision, secrets.token_bytes(32))

    @property
    def setup_ident(self) -> bytes:
        """SHA-256 of what makes the matrices (seed, n, precision)."""
        head = struct.pack("<IB", self.n, PRECISIONS.index(self.precision))
        return hashlib.sha256(VERSION + b"|setup|" + head + self.seed).digest()

    @property
    def ident(self) -> bytes:
        """SHA-256 of every field: digests of one spec never pass for another's."""
        head = struct.pack(
            "<IIBBB",
            self.n,
            self.rounds,
            PRECISIONS.index(self.precision),
            len(self.seed),
            len(self.salt),
        )
        return hashlib.sha256(VERSION + b"|spec|" + head + self.seed + self.salt).digest()

    @property
    def flops(self) -> int:
        """Multiply-adds counted twice, all rounds."""
        return 2 * self.n**3 * self.rounds

    def setup_json(self) -> dict[str, object]:
        """What the agent gets first (no salt: it cannot start the rounds yet)."""
        return {
            "seed": self.seed.hex(),
            "n": self.n,
            "rounds": self.rounds,
            "precision": self.precision,
        }

    def to_json(self) -> dict[str, object]:
        return {**self.setup_json(), "salt": self.salt.hex()}

    @classmethod
    def from_json(cls, data: object) -> MatmulSpec:
        """From :meth:`to_json` output (the agent merges the setup and the salt it was sent);
        ProtocolError for anything else (a peer sent it)."""
        keys = {"seed", "n", "rounds", "precision", "salt"}
        if not isinstance(data, dict) or set(data) != keys:
            raise ProtocolError("challenge spec must be an object with " + ", ".join(sorted(keys)))
        for name in ("seed", "salt"):
            if not isinstance(data[name], str) or len(data[name]) > 128:
                raise ProtocolError(f"challenge {name} must be at most 128 hex digits")
        try:
            return cls(
                bytes.fromhex(data["seed"]),
                data["n"],
                data["rounds"],
                data["precision"],
                bytes.fromhex(data["salt"]),
            )
        except (ValueError, ConfigError) as exc:
            raise ProtocolError(f"challenge spec is invalid: {exc}") from None


def matrix_keys(spec: MatmulSpec) -> tuple[int, int, int, int]:
    """``(a_k1, a_k2, b_k1, b_k2)``: the stream keys of ``A`` and ``B``."""
    a1, a2, b1, b2 = derive_keys(spec.setup_ident, b"matrices", 4)
    return a1, a2, b1, b2


def round_keys(spec: MatmulSpec, round_index: int) -> tuple[int, int]:
    """The stream keys of round ``round_index``'s column signs."""
    if isinstance(round_index, bool) or not isinstance(round_index, int):
        raise ConfigError(f"round must be an integer, not {round_index!r}")
    if not 0 <= round_index < spec.rounds:
        raise ConfigError(f"round {round_index} is outside the spec's {spec.rounds} rounds")
    k1, k2 = derive_keys(spec.ident, b"signs" + struct.pack("<I", round_index), 2)
    return k1, k2


def round_signs(spec: MatmulSpec, round_index: int) -> list[int]:
    """``sign_r``: +1 or -1 for each of ``A``'s columns (word ``k`` odd -> -1)."""
    k1, k2 = round_keys(spec, round_index)
    return [-1 if stream_word(k1, k2, k) & 1 else 1 for k in range(spec.n)]


def _value_int(k1: int, k2: int, idx: int) -> int:
    """The element as an integer multiple of 2**-10 (inlined mix32 x2: this is the hot loop)."""
    x = (idx ^ k1) & MASK32
    x ^= x >> 16
    x = (x * MIX_A) & MASK32
    x ^= x >> 15
    x = (x * MIX_B) & MASK32
    x ^= x >> 16
    x ^= k2
    x ^= x >> 16
    x = (x * MIX_A) & MASK32
    x ^= x >> 15
    x = (x * MIX_B) & MASK32
    x ^= x >> 16
    v = (128 + (x & 127)) << (3 - ((x >> 7) & 3))
    return -v if (x >> 9) & 1 else v


def _a_row(spec: MatmulSpec, keys: Sequence[int], i: int) -> list[int]:
    base = i * spec.n
    return [_value_int(keys[0], keys[1], base + k) for k in range(spec.n)]


def _b_col(spec: MatmulSpec, keys: Sequence[int], j: int) -> list[int]:
    n = spec.n
    return [_value_int(keys[2], keys[3], k * n + j) for k in range(n)]


def reference_entry(spec: MatmulSpec, round_index: int, i: int, j: int) -> float:
    """``C_r[i, j]`` exactly (as a float64; the integer sum is exact)."""
    keys = matrix_keys(spec)
    signs = round_signs(spec, round_index)
    a, b = _a_row(spec, keys, i), _b_col(spec, keys, j)
    return sum(s * x * y for s, x, y in zip(signs, a, b, strict=True)) * _SCALE**2


def entry_tolerance(spec: MatmulSpec, abs_dot: float, exact: float) -> float:
    """Largest honest error of one output entry: worst-case accumulation of ``n`` products
    (``gamma_n * sum|a*b|``, any summation order) plus one rounding to the output format."""
    n_u = spec.n * _U_ACC[spec.precision]
    gamma = n_u / (1 - n_u)
    u_out = _U_OUT[spec.precision]
    return gamma * abs_dot + u_out * (abs(exact) + gamma * abs_dot) + 1e-30


def round_digest(spec: MatmulSpec, round_index: int, row_sums: bytes) -> bytes:
    """The commitment to round ``r``: SHA-256 over the spec, the round and its row sums' bytes."""
    return hashlib.sha256(VERSION + spec.ident + struct.pack("<I", round_index) + row_sums).digest()


@dataclass(frozen=True)
class Commit:
    """The agent's first answer: one 32-byte digest per round, sent before any sample is known."""

    round_digests: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.round_digests, tuple) or not all(
            isinstance(d, bytes) and len(d) == 32 for d in self.round_digests
        ):
            raise ProtocolError("a challenge commit is a tuple of 32-byte digests")
        if not 1 <= len(self.round_digests) <= MAX_ROUNDS:
            raise ProtocolError(f"a challenge commit holds 1 to {MAX_ROUNDS} digests")

    @property
    def digest(self) -> bytes:
        """One digest for the whole challenge (what reports and attestations quote)."""
        return hashlib.sha256(b"".join(self.round_digests)).digest()


@dataclass(frozen=True)
class Sample:
    """What the renter asks to see: rows of some rounds, and the columns it recomputes."""

    rows: tuple[tuple[int, int], ...]  # (round, row)
    cols: tuple[int, ...]

    @property
    def rounds(self) -> tuple[int, ...]:
        return tuple(sorted({r for r, _ in self.rows}))


def choose_sample(
    spec: MatmulSpec,
    entropy: bytes,
    *,
    rounds_checked: int = 8,
    rows_per_round: int = 2,
    cols: int = 16,
) -> Sample:
    """The renter's sample, derived from its own secret ``entropy`` (``secrets.token_bytes(32)``,
    drawn after the commit arrived). Renter cost: ``(cols + rows) · n`` stream words and
    ``rows · cols · n`` multiply-adds in Python, ~1 s for n = 4096 with the defaults here."""
    keys = derive_keys(entropy, b"sample" + spec.ident, 3)
    k = min(rounds_checked, spec.rounds)
    rounds = _distinct(keys[0], k, spec.rounds)
    rows = tuple(
        (r, i) for r in rounds for i in _distinct(keys[1] ^ r, min(rows_per_round, spec.n), spec.n)
    )
    return Sample(rows, tuple(sorted(_distinct(keys[2], min(cols, spec.n), spec.n))))


def _distinct(key: int, count: int, bound: int) -> list[int]:
    out: list[int] = []
    idx = 0
    while len(out) < count:
        word = int.from_bytes(hashlib.sha256(struct.pack("<II", key, idx)).digest()[:8], "little")
        idx += 1
        if word % bound not in out:
            out.append(word % bound)
    return out


@dataclass(frozen=True)
class Reveal:
    """The agent's second answer: the row sums of each sampled round and the sampled rows, as
    little-endian float32 bytes. Shapes are checked by :func:`check_reveal` against the spec."""

    row_sums: Mapping[int, bytes]  # round -> n float32
    rows: Mapping[tuple[int, int], bytes]  # (round, row) -> n float32

    def __post_init__(self) -> None:
        if not isinstance(self.row_sums, Mapping) or not isinstance(self.rows, Mapping):
            raise ProtocolError("a reveal holds row sums and rows keyed by round")
        for key, value in [*self.row_sums.items(), *self.rows.items()]:
            if not isinstance(value, bytes | bytearray):
                raise ProtocolError(f"reveal entry {key!r} is not bytes")

    def size(self) -> int:
        return sum(map(len, self.row_sums.values())) + sum(map(len, self.rows.values()))


def max_reveal_bytes(spec: MatmulSpec, sample: Sample) -> int:
    """The most bytes an honest reveal for ``sample`` holds (cap the reply at this)."""
    return 4 * spec.n * (len(sample.rounds) + len(sample.rows))


@dataclass(frozen=True)
class RowCheck:
    ok: bool
    reason: str
    max_error_ratio: float = 0.0  # largest |error| / tolerance seen (< 1 for an honest answer)


def check_reveal(spec: MatmulSpec, commit: Commit, sample: Sample, reveal: Reveal) -> RowCheck:
    """The renter's verdict on one challenge answer; never raises for a bad answer."""
    if len(commit.round_digests) != spec.rounds:
        return RowCheck(
            False, f"commit has {len(commit.round_digests)} digests for {spec.rounds} rounds"
        )
    if set(reveal.row_sums) != set(sample.rounds) or set(reveal.rows) != set(sample.rows):
        return RowCheck(False, "the reveal does not answer the sampled rounds and rows")
    sums: dict[int, array[float]] = {}
    try:
        for r in sample.rounds:
            raw = reveal.row_sums[r]
            if round_digest(spec, r, bytes(raw)) != commit.round_digests[r]:
                return RowCheck(False, f"round {r}: row sums do not match the committed digest")
            sums[r] = decode_f32(bytes(raw), spec.n)
        worst = 0.0
        keys = matrix_keys(spec)
        columns = {j: _b_col(spec, keys, j) for j in sample.cols}
        for r in sample.rounds:
            signs = round_signs(spec, r)
            for rr, i in sample.rows:
                if rr != r:
                    continue
                row = decode_f32(bytes(reveal.rows[(r, i)]), spec.n)
                if not all(math.isfinite(v) for v in row):
                    return RowCheck(False, f"round {r} row {i}: not finite")
                total = math.fsum(v * v for v in row)
                # float32 squares and sum, any order: within gamma_(n+1) of the exact sum
                n_u = (spec.n + 2) * 2.0**-24
                if abs(total - sums[r][i]) > n_u / (1 - n_u) * total + 1e-30:
                    return RowCheck(
                        False, f"round {r} row {i}: does not match its committed row sum"
                    )
                a = [sg * x for sg, x in zip(signs, _a_row(spec, keys, i), strict=True)]
                for j, col in columns.items():
                    products = list(map(operator.mul, a, col))
                    exact = sum(products) * _SCALE**2
                    abs_dot = sum(map(abs, products)) * _SCALE**2
                    ratio = abs(row[j] - exact) / entry_tolerance(spec, abs_dot, exact)
                    worst = max(worst, ratio)
                    if ratio > 1:
                        return RowCheck(
                            False,
                            f"round {r} row {i} column {j}: {row[j]!r}, the product is {exact!r}",
                            worst,
                        )
    except ProtocolError as exc:
        return RowCheck(False, f"malformed reveal: {exc}")
    return RowCheck(True, f"{len(sample.rows)} rows x {len(sample.cols)} columns match", worst)


def measured_tflops(spec: MatmulSpec, elapsed_s: float, rtt_s: float = 0.0) -> float:
    """Throughput the renter can vouch for: all the spec's flops over the time from sending the
    spec to receiving the commit, less one network round trip (never less than 1 µs)."""
    seconds = max(float(elapsed_s) - max(float(rtt_s), 0.0), 1e-6)
    return spec.flops / seconds / 1e12
