"""Frame codec: exact layout, round trips, and nothing but ProtocolError on bad bytes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core.frames import (
    HEADER,
    MAX_PARTS,
    Channel,
    Frame,
    decode_frame,
    encode_frame,
)
from jupyter_gpumarket.exceptions import FrameTooLarge, ProtocolError

channels = st.sampled_from([c for c in Channel if c is not Channel.ACK])
parts = st.lists(st.binary(max_size=64), max_size=8)
u64 = st.integers(min_value=0, max_value=2**64 - 1)


def test_layout_is_the_documented_one() -> None:
    data = encode_frame(Channel.SHELL, 7, 5, [b"id", b"", b"xyz"])
    assert data[:20] == struct.pack("!BBHQQ", 1, 1, 3, 7, 5)
    assert data[20:32] == struct.pack("!III", 2, 0, 3)
    assert data[32:] == b"idxyz"


def test_parts_are_carried_verbatim_including_binary_buffers() -> None:
    blob = bytes(range(256)) * 10
    frame = decode_frame(encode_frame(Channel.IOPUB, 1, 0, [b"<IDS|MSG>", blob]))
    assert frame == Frame(Channel.IOPUB, 1, 0, (b"<IDS|MSG>", blob))


def test_ack_frame_has_no_parts() -> None:
    frame = decode_frame(encode_frame(Channel.ACK, 0, 99, []))
    assert frame.channel is Channel.ACK
    assert frame.ack == 99
    assert frame.parts == ()


@given(channels, st.integers(min_value=1, max_value=2**64 - 1), u64, parts)
def test_round_trip(channel: Channel, seq: int, ack: int, body: list[bytes]) -> None:
    assert decode_frame(encode_frame(channel, seq, ack, body)) == Frame(
        channel, seq, ack, tuple(body)
    )


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except ProtocolError:
        return
    assert encode_frame(frame.channel, frame.seq, frame.ack, frame.parts) == data


@given(channels, st.integers(min_value=1, max_value=1000), parts, st.data())
def test_corrupting_any_byte_never_escapes_protocol_error(
    channel: Channel, seq: int, body: list[bytes], data: st.DataObject
) -> None:
    raw = bytearray(encode_frame(channel, seq, 0, body))
    i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[i] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(ProtocolError):
            decode_frame(candidate)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than"),
        (struct.pack("!BBHQQ", 2, 1, 0, 1, 0), "unsupported frame version 2"),
        (struct.pack("!BBHQQ", 1, 42, 0, 1, 0), "unknown channel 42"),
        (struct.pack("!BBHQQ", 1, 1, 1, 1, 0), "truncated"),
        (struct.pack("!BBHQQI", 1, 1, 1, 1, 0, 10) + b"abc", "add up to 10"),
        (struct.pack("!BBHQQ", 1, 1, 0, 0, 0), "seq >= 1"),
        (struct.pack("!BBHQQ", 1, 0, 0, 3, 0), "ACK frame"),
        (struct.pack("!BBHQQ", 1, 1, MAX_PARTS + 1, 1, 0), "parts"),
    ],
)
def test_malformed_frames_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_frame(data)


def test_oversized_frame_is_refused_before_parsing() -> None:
    data = encode_frame(Channel.SHELL, 1, 0, [b"x" * 100])
    with pytest.raises(FrameTooLarge, match="exceeds the limit of 64"):
        decode_frame(data, max_frame_bytes=64)


def test_too_many_parts_cannot_be_encoded() -> None:
    with pytest.raises(ProtocolError, match="at most"):
        encode_frame(Channel.SHELL, 1, 0, [b""] * (MAX_PARTS + 1))


def test_header_size_is_twenty_bytes() -> None:
    assert HEADER.size == 20
