"""Frames as buffers (the agent's scatter writes): the same bytes as the joined codec, parts
untouched, the replay buffer counting and replaying them identically; websocket headers as
websockets itself writes them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from jupyter_gpumarket.core.frames import Channel, decode_frame, encode_frame, encode_frame_parts
from jupyter_gpumarket.core.session import TunnelSession
from jupyter_gpumarket.core.wsframe import binary_frame_header
from jupyter_gpumarket.wire_send import SCATTER_MIN, coalesce

channels = st.sampled_from([c for c in Channel if c is not Channel.ACK])
part_kinds = st.sampled_from([bytes, bytearray, memoryview])
sizes = st.one_of(st.integers(0, 300), st.sampled_from([65535, 65536, 65537, 200_000]))
u64 = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def message(draw: st.DrawFn) -> list[bytes]:
    out: list[bytes] = []
    for size in draw(st.lists(sizes, max_size=9)):
        raw = bytes([draw(st.integers(0, 255))]) * size
        out.append(draw(part_kinds)(raw))
    return out


@given(channels, u64, u64, message())
def test_joined_parts_are_the_joined_frame_and_decode_back(
    channel: Channel, seq: int, ack: int, parts: list[bytes]
) -> None:
    buffers = encode_frame_parts(channel, seq, ack, parts)
    data = b"".join(buffers)
    assert data == encode_frame(channel, seq, ack, parts)
    frame = decode_frame(data)
    assert (frame.channel, frame.seq, frame.ack) == (channel, seq, ack)
    assert [bytes(p) for p in frame.parts] == [bytes(p) for p in parts]


def test_parts_are_handed_on_as_given_not_copied() -> None:
    big = memoryview(b"x" * 1_000_000)
    small = b"header"
    buffers = encode_frame_parts(Channel.IOPUB, 3, 1, [small, big])
    assert len(buffers) == 3
    assert buffers[1] is small
    assert buffers[2] is big
    assert len(buffers[0]) == 20 + 4 * 2


def test_an_empty_message_is_one_buffer() -> None:
    assert encode_frame_parts(Channel.SHELL, 1, 0, []) == [encode_frame(Channel.SHELL, 1, 0, [])]


@given(st.lists(message(), min_size=1, max_size=6), st.data())
def test_replay_of_parts_counts_and_replays_what_was_sent(
    messages: list[list[bytes]], data: st.DataObject
) -> None:
    a, b = TunnelSession(), TunnelSession()
    sent = [b"".join(a.send_parts(Channel.IOPUB, m)) for m in messages]
    assert a.unacked_bytes == sum(len(f) for f in sent)
    assert a.unacked_frames == len(sent)
    got = data.draw(st.integers(0, len(sent)))
    for frame in sent[:got]:
        b.receive(frame)
    assert a.replay_after(b.last_received) == sent[got:]
    assert [b"".join(f) for f in a.replay_parts_after(b.last_received)] == sent[got:]
    for frame in a.replay_after(b.last_received):
        assert b.receive(frame) is not None
    assert b.last_received == len(sent)


def test_send_and_send_parts_frame_alike() -> None:
    a, b = TunnelSession(), TunnelSession()
    parts = [b"a", memoryview(b"b" * 100_000)]
    assert a.send(Channel.IOPUB, parts) == b"".join(b.send_parts(Channel.IOPUB, parts))


def test_the_replay_limit_counts_bytes_of_parts() -> None:
    a = TunnelSession(replay_limit_bytes=250_000)
    for _ in range(5):
        a.send_parts(Channel.IOPUB, [memoryview(b"z" * 100_000)])
    assert a.unacked_frames == 2
    assert a.dropped_frames == 3
    assert a.dropped_bytes == 3 * (100_000 + 24)
    assert a.unacked_bytes == 2 * (100_000 + 24)


def test_a_too_large_message_is_refused_as_parts() -> None:
    a = TunnelSession(max_frame_bytes=1000)
    with pytest.raises(Exception, match="frame limit"):
        a.send_parts(Channel.IOPUB, [b"x" * 1000])
    assert a.next_seq == 1
    assert a.unacked_frames == 0


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 2**20, 2**32 + 5])
def test_header_is_what_websockets_writes_for_a_server(length: int) -> None:
    payload = b"\x00" * length if length <= 2**20 else None
    header = binary_frame_header(length)
    if payload is None:  # too large to build here: the 10-byte form with a 64-bit length
        assert header == bytes([0x82, 127]) + length.to_bytes(8, "big")
        return
    expected = WsFrame(Opcode.BINARY, payload).serialize(mask=False)
    assert header + payload == expected
    assert len(header) == (2 if length < 126 else 4 if length < 65536 else 10)


def test_header_refuses_impossible_lengths() -> None:
    with pytest.raises(ValueError, match="payload length"):
        binary_frame_header(-1)
    with pytest.raises(ValueError, match="payload length"):
        binary_frame_header(2**63)


@given(st.lists(st.sampled_from([0, 5, SCATTER_MIN - 1, SCATTER_MIN, 200_000]), max_size=10))
def test_coalesce_keeps_bytes_and_order_and_large_buffers(lengths: list[int]) -> None:
    buffers = [bytes([i % 256]) * n for i, n in enumerate(lengths)]
    out = coalesce(buffers)
    assert b"".join(out) == b"".join(buffers)
    large = [b for b in buffers if len(b) >= SCATTER_MIN]
    assert [b for b in out if any(b is x for x in large)] == large
    for i in range(len(out) - 1):  # no two small ones left side by side
        assert len(out[i]) >= SCATTER_MIN or len(out[i + 1]) >= SCATTER_MIN
