"""Float32 vectors on the wire: little-endian bytes, decoded only at the exact expected length."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["decode_f32", "encode_f32"]


def encode_f32(values: Sequence[float]) -> bytes:
    """Little-endian float32 bytes (the wire form of rows and row sums)."""
    out = array("f", values)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def decode_f32(data: bytes, count: int) -> array[float]:
    """``count`` little-endian float32 values; ProtocolError unless exactly that many bytes."""
    if not isinstance(data, bytes | bytearray) or len(data) != 4 * count:
        size = len(data) if isinstance(data, bytes | bytearray) else type(data).__name__
        raise ProtocolError(f"expected {4 * count} bytes of float32, got {size}")
    out = array("f")
    out.frombytes(bytes(data))
    if sys.byteorder == "big":
        out.byteswap()
    return out
