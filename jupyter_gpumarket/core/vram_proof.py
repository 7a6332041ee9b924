"""The VRAM proof of the challenge: a seeded fill of most of the claimed memory, and checksums of
slices the renter picks afterwards, answered within a short deadline.

.. code-block:: text

    renter                                             agent
    spec = VramSpec.fresh(fill_mib_for(claimed))  ─►   fill spec.words uint32 words on the device:
                                                        word[w] = fill_word(spec, w)
                                              ◄─ ready (the fill is done)
    slices = choose_slices(spec, secrets.token_bytes(32))
    (start the clock)                             ─►   for each (offset, length): SHA-256 of the
                                              ◄─       words' little-endian bytes (copied back)
    vram_verdict(spec, slices, answers, elapsed_s, deadline_s) -> VramProof(proven_mib, reason)

The word at index ``w`` is ``mix32(mix32(lo ^ k1) ^ ((k2 + hi * 0x9E37) & MASK32))`` with
``lo, hi = w & MASK32, w >> 32`` (int64-safe, like the matmul stream). The renter computes the
expected answers itself (``count · length`` words, ~0.1 s in Python for the defaults).

What it proves, and what not: an agent that does not hold the fill has to recompute the slices
from the seed within the deadline. Our own agent and a naive fake (a simulated GPU, a CPU host
without the memory) cannot; a provider who writes its own agent with the fill formula can, since
the words are cheap to compute. So a ``proven_mib`` is evidence of the claim, not a proof against a
determined forger: the matmul throughput (which cannot be faked without the compute) and NVML
carry the verdict alongside it. A memory-hard fill is left for later.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from jupyter_gpumarket.core.seeded import MASK32, derive_keys, mix32
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

__all__ = [
    "FILL_FRACTION",
    "MASK32",
    "VramProof",
    "VramSlices",
    "VramSpec",
    "answers_from_json",
    "answers_to_json",
    "choose_slices",
    "fill_mib_for",
    "fill_word",
    "mix32",
    "slice_answer",
    "vram_verdict",
]

WORDS_PER_MIB = 262_144
FILL_FRACTION = 0.85  # of the claimed memory: the rest is the CUDA context and the allocator's
MAX_FILL_MIB = 4 * 1024 * 1024  # 4 TiB: far above any GPU; bounds a peer-chosen size
MAX_SLICES = 256
MAX_SLICE_WORDS = 1 << 16


def fill_mib_for(claimed_vram_mib: int) -> int:
    """How much the agent fills for a claim: :data:`FILL_FRACTION` of it, at least 1 MiB."""
    if isinstance(claimed_vram_mib, bool) or not isinstance(claimed_vram_mib, int):
        raise ConfigError(f"claimed VRAM must be an integer MiB, not {claimed_vram_mib!r}")
    return max(1, int(claimed_vram_mib * FILL_FRACTION))


@dataclass(frozen=True)
class VramSpec:
    seed: bytes  # 16 to 64 renter-chosen bytes
    fill_mib: int

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or not 16 <= len(self.seed) <= 64:
            raise ConfigError("VRAM proof seed must be 16 to 64 bytes")
        f = self.fill_mib
        if isinstance(f, bool) or not isinstance(f, int) or not 1 <= f <= MAX_FILL_MIB:
            raise ConfigError(f"VRAM proof fill_mib must be in [1, {MAX_FILL_MIB}], not {f!r}")

    @classmethod
    def fresh(cls, fill_mib: int) -> VramSpec:
        return cls(secrets.token_bytes(32), fill_mib)

    @property
    def words(self) -> int:
        return self.fill_mib * WORDS_PER_MIB

    @property
    def keys(self) -> tuple[int, int]:
        k1, k2 = derive_keys(self.seed + struct.pack("<Q", self.fill_mib), b"vram", 2)
        return k1, k2

    def to_json(self) -> dict[str, object]:
        return {"seed": self.seed.hex(), "fill_mib": self.fill_mib}

    @classmethod
    def from_json(cls, data: object) -> VramSpec:
        """From :meth:`to_json` output; ProtocolError for anything else (a peer sent it)."""
        if not isinstance(data, dict) or set(data) != {"seed", "fill_mib"}:
            raise ProtocolError("VRAM proof spec must be an object with seed and fill_mib")
        seed = data["seed"]
        if not isinstance(seed, str) or len(seed) > 128:
            raise ProtocolError("VRAM proof seed must be at most 128 hex digits")
        try:
            return cls(bytes.fromhex(seed), data["fill_mib"])
        except (ValueError, ConfigError) as exc:
            raise ProtocolError(f"VRAM proof spec is invalid: {exc}") from None


def fill_word(spec: VramSpec, index: int, keys: tuple[int, int] | None = None) -> int:
    """Word ``index`` of the fill (``keys``: pass ``spec.keys`` when calling in a loop)."""
    k1, k2 = keys or spec.keys
    lo, hi = index & MASK32, index >> 32
    return mix32(mix32(lo ^ k1) ^ ((k2 + hi * 0x9E37) & MASK32))


@dataclass(frozen=True)
class VramSlices:
    """The renter's question: word offsets of ``length`` words each, inside the fill."""

    offsets: tuple[int, ...]
    length: int

    def to_json(self) -> dict[str, object]:
        return {"offsets": list(self.offsets), "length": self.length}

    @classmethod
    def from_json(cls, data: object, spec: VramSpec) -> VramSlices:
        """The renter's slices as the agent parses them: bounded and inside the fill."""
        offsets = data.get("offsets") if isinstance(data, dict) else None
        length = data.get("length") if isinstance(data, dict) else None
        if isinstance(length, bool) or not isinstance(length, int):
            raise ProtocolError("VRAM slices need an integer length")
        if not 1 <= length <= min(MAX_SLICE_WORDS, spec.words):
            raise ProtocolError(f"VRAM slice length must be 1 to {MAX_SLICE_WORDS} words")
        if not isinstance(offsets, list) or not 1 <= len(offsets) <= MAX_SLICES:
            raise ProtocolError(f"VRAM slices: 1 to {MAX_SLICES} offsets")
        for o in offsets:
            if isinstance(o, bool) or not isinstance(o, int) or not 0 <= o <= spec.words - length:
                raise ProtocolError(f"VRAM slice offset {o!r} is outside the fill")
        return cls(tuple(offsets), length)


def answers_to_json(answers: Sequence[bytes]) -> list[str]:
    return [a.hex() for a in answers]


def answers_from_json(data: object, slices: VramSlices) -> list[bytes]:
    """The agent's checksums as the renter parses them: one 32-byte hex digest per slice."""
    if not isinstance(data, list) or len(data) != len(slices.offsets):
        raise ProtocolError(f"expected {len(slices.offsets)} slice checksums")
    if not all(isinstance(a, str) and len(a) == 64 for a in data):
        raise ProtocolError("slice checksums are 64 hex digits each")
    try:
        return [bytes.fromhex(a) for a in data]
    except ValueError:
        raise ProtocolError("slice checksums are 64 hex digits each") from None


def choose_slices(
    spec: VramSpec, entropy: bytes, *, count: int = 32, length: int = 1024
) -> VramSlices:
    """``count`` slices spread over the whole fill, derived from the renter's secret entropy."""
    if not 1 <= count <= MAX_SLICES or not 1 <= length <= min(MAX_SLICE_WORDS, spec.words):
        raise ConfigError(f"VRAM slices: count 1..{MAX_SLICES}, length 1..{MAX_SLICE_WORDS}")
    span = spec.words - length + 1
    offsets = []
    for i in range(count):
        word = hashlib.sha256(entropy + spec.seed + struct.pack("<I", i)).digest()
        # slice i lands in the i-th of count equal stretches: the whole fill is sampled
        lo, hi = span * i // count, max(span * (i + 1) // count, span * i // count + 1)
        offsets.append(lo + int.from_bytes(word[:8], "little") % (hi - lo))
    return VramSlices(tuple(offsets), length)


def slice_answer(spec: VramSpec, offset: int, length: int) -> bytes:
    """SHA-256 of the slice's words as little-endian uint32 (the renter's expected answer)."""
    keys = spec.keys
    words = array("I", (fill_word(spec, w, keys) for w in range(offset, offset + length)))
    if words.itemsize != 4:  # pragma: no cover - every platform we run on has 4-byte "I"
        words = array("L", words)
    if sys.byteorder == "big":
        words.byteswap()
    return hashlib.sha256(words.tobytes()).digest()


@dataclass(frozen=True)
class VramProof:
    proven_mib: int  # the fill size when every slice was right in time, else 0
    reason: str


def vram_verdict(
    spec: VramSpec,
    slices: VramSlices,
    answers: Sequence[bytes],
    elapsed_s: float,
    deadline_s: float,
) -> VramProof:
    """Every slice right and in time -> ``proven_mib = spec.fill_mib``; else 0 with the reason."""
    if not isinstance(answers, list | tuple) or len(answers) != len(slices.offsets):
        return VramProof(0, f"expected {len(slices.offsets)} slice checksums")
    if elapsed_s > deadline_s:
        return VramProof(
            0, f"slices answered in {elapsed_s:.3f} s, past the {deadline_s} s deadline"
        )
    for n, (offset, answer) in enumerate(zip(slices.offsets, answers, strict=True)):
        if not isinstance(answer, bytes) or answer != slice_answer(spec, offset, slices.length):
            return VramProof(0, f"slice {n} (word {offset}) has the wrong checksum")
    return VramProof(spec.fill_mib, f"{len(answers)} slices of {spec.fill_mib} MiB right in time")
