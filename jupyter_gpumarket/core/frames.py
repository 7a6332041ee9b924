"""Binary frame codec of the renter <-> provider tunnel.

One websocket binary message carries exactly one frame::

    offset  size  field
    0       1     version (1)
    1       1     channel (see Channel)
    2       2     nparts: number of ZMQ message parts (big endian)
    4       8     seq: sender's sequence number, 1, 2, ... (0 on ACK frames)
    12      8     ack: highest sequence number the sender has received in order
    20      4*n   length of each part
    ...           the parts, concatenated, exactly as ZMQ delivered them

ZMQ multipart messages are carried as they are: no JSON re-encoding, no base64. The AGENT
channel carries one part, a UTF-8 JSON object (control plane: start kernel, signal, exit).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from jupyter_gpumarket.exceptions import FrameTooLarge, ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "HEADER",
    "MAX_PARTS",
    "VERSION",
    "Channel",
    "Frame",
    "decode_frame",
    "encode_frame",
    "encode_frame_parts",
]

VERSION = 1
HEADER = struct.Struct("!BBHQQ")
MAX_PARTS = 4096
DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024
_U64_MAX = 2**64 - 1
_ZERO_COPY_MIN = 65536


class Channel(enum.IntEnum):
    """What a frame's parts are for. ACK frames carry no parts, only the cumulative ack."""

    ACK = 0
    SHELL = 1
    CONTROL = 2
    STDIN = 3
    IOPUB = 4
    HB = 5
    AGENT = 6


@dataclass(frozen=True, slots=True)
class Frame:
    channel: Channel
    seq: int
    ack: int
    parts: tuple[bytes | memoryview, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.channel, Channel):
            raise ProtocolError(f"frame channel must be a Channel, got {self.channel!r}")
        if not 0 <= self.seq <= _U64_MAX:
            raise ProtocolError(f"frame seq out of range: {self.seq}")
        if not 0 <= self.ack <= _U64_MAX:
            raise ProtocolError(f"frame ack out of range: {self.ack}")
        if len(self.parts) > MAX_PARTS:
            raise ProtocolError(f"frame has {len(self.parts)} parts; at most {MAX_PARTS}")
        if self.channel is Channel.ACK and (self.parts or self.seq):
            raise ProtocolError("an ACK frame carries no parts and seq 0")
        if self.channel is not Channel.ACK and self.seq == 0:
            raise ProtocolError("a data frame needs seq >= 1")


def encode_frame(channel: Channel, seq: int, ack: int, parts: Sequence[bytes]) -> bytes:
    """Encode one frame. Parts may be bytes, bytearray, memoryview or zmq.Frame buffers."""
    return b"".join(encode_frame_parts(channel, seq, ack, parts))


def encode_frame_parts(channel: Channel, seq: int, ack: int, parts: Sequence[bytes]) -> list[bytes]:
    """Encode one frame as buffers to write in order: the header with the part-length table
    (new bytes), then the parts themselves, as given (not copied: a writer that scatters,
    ``transport.writelines``, sends a large kernel output without joining it). Their join is
    :func:`encode_frame`'s result. The parts must not change while the buffers are held."""
    n = len(parts)
    if n > MAX_PARTS:
        raise ProtocolError(f"message has {n} parts; at most {MAX_PARTS} fit in a frame")
    head = HEADER.pack(VERSION, channel, n, seq, ack) + struct.pack(
        f"!{n}I", *(len(p) for p in parts)
    )
    return [head, *parts]


def decode_frame(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """Decode one frame; any malformed input raises ProtocolError (or FrameTooLarge).

    Parts larger than 64 KiB are zero-copy memoryviews into ``data`` (ZMQ sends them as they
    are); smaller ones are bytes, which are cheaper for ZMQ to send than a view.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"frame must be bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_frame_bytes:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_frame_bytes}")
    if size < HEADER.size:
        raise ProtocolError(f"frame of {size} bytes is shorter than the {HEADER.size}-byte header")
    version, raw_channel, n, seq, ack = HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise ProtocolError(f"unsupported frame version {version}; this side speaks {VERSION}")
    try:
        channel = Channel(raw_channel)
    except ValueError:
        raise ProtocolError(f"unknown channel {raw_channel}") from None
    if n > MAX_PARTS:
        raise ProtocolError(f"frame declares {n} parts; at most {MAX_PARTS}")
    offset = HEADER.size + 4 * n
    if size < offset:
        raise ProtocolError("frame is truncated inside its part-length table")
    lengths = struct.unpack_from(f"!{n}I", data, HEADER.size)
    if offset + sum(lengths) != size:
        raise ProtocolError(
            f"frame part lengths add up to {sum(lengths)} bytes but {size - offset} follow"
        )
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for length in lengths:
        part = view[offset : offset + length]
        parts.append(part if length > _ZERO_COPY_MIN else bytes(part))
        offset += length
    return Frame(channel, seq, ack, tuple(parts))
