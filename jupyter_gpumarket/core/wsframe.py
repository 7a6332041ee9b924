"""RFC 6455 framing of one unfragmented, unmasked binary message (a server's, sans-I/O).

The agent writes a large tunnel frame as this header followed by the frame's buffers, scattered
(``transport.writelines``), instead of letting websockets copy header and payload into one
bytes object. Only what a server sends with no extension negotiated: FIN set, RSV bits clear,
opcode 0x2, no mask; the length in 7 bits, or 126 + 16 bits, or 127 + 64 bits (section 5.2).
"""

from __future__ import annotations

import struct

__all__ = ["binary_frame_header"]

_FIN_BINARY = 0x80 | 0x2
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def binary_frame_header(length: int) -> bytes:
    """The 2, 4 or 10 header bytes of a final, unmasked binary frame of ``length`` bytes."""
    if length < 0 or length >= 2**63:
        raise ValueError(f"a websocket payload length must be in [0, 2**63), got {length}")
    if length < 126:
        return _SHORT.pack(_FIN_BINARY, length)
    if length < 65536:
        return _MEDIUM.pack(_FIN_BINARY, 126, length)
    return _LONG.pack(_FIN_BINARY, 127, length)
