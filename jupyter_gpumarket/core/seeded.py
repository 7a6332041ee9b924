"""The seeded number stream both sides of a challenge compute: a counter-mode 32-bit hash.

Element ``idx`` of a stream keyed by ``(k1, k2)`` is ``mix32(mix32(idx ^ k1) ^ k2)``: no state,
so a GPU computes all elements at once and the renter computes only the few it checks. Every
multiplier is below 2**31 and every operand is masked to 32 bits, so the same steps on int64
tensors (torch, cupy, numpy) never overflow and give the same bits as this Python code.

The keys come from SHA-256 of the renter's seed and a label (:func:`derive_keys`), so nothing
about the stream is guessable before the seed is sent.
"""

from __future__ import annotations

import hashlib

__all__ = ["MASK32", "MIX_A", "MIX_B", "derive_keys", "mix32", "stream_word"]

MASK32 = 0xFFFFFFFF
MIX_A = 0x7FEB352D  # both below 2**31: (2**32 - 1) * MIX < 2**63 fits a signed int64
MIX_B = 0x1B873593


def mix32(x: int) -> int:
    """A 32-bit avalanche step (xor-shift-multiply). Tensor form, with ``x`` int64 in [0, 2**32):
    ``x ^= x >> 16; x = (x * MIX_A) & MASK32; x ^= x >> 15; x = (x * MIX_B) & MASK32;
    x ^= x >> 16``."""
    x ^= x >> 16
    x = (x * MIX_A) & MASK32
    x ^= x >> 15
    x = (x * MIX_B) & MASK32
    return x ^ (x >> 16)


def stream_word(k1: int, k2: int, idx: int) -> int:
    """Element ``idx`` (0 <= idx < 2**32) of the stream keyed by ``(k1, k2)``."""
    return mix32(mix32((idx ^ k1) & MASK32) ^ k2)


def derive_keys(seed: bytes, label: bytes, count: int) -> tuple[int, ...]:
    """``count`` 32-bit keys from SHA-256(``label`` || seed); ``count`` <= 8."""
    if not 1 <= count <= 8:
        raise ValueError(f"derive_keys gives 1 to 8 keys, not {count}")
    digest = hashlib.sha256(label + b"\x00" + seed).digest()
    return tuple(int.from_bytes(digest[4 * i : 4 * i + 4], "little") for i in range(count))
