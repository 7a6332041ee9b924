"""Tunnel session: ordering, acks, replay after a cut, bounded buffer, honest loss counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpumarket.core.frames import Channel, decode_frame
from jupyter_gpumarket.core.session import Delivery, Gap, TunnelSession
from jupyter_gpumarket.exceptions import ProtocolError


def test_messages_are_numbered_and_delivered_in_order() -> None:
    a, b = TunnelSession(), TunnelSession()
    frames = [a.send(Channel.SHELL, [b"m%d" % i]) for i in range(3)]
    assert [decode_frame(f).seq for f in frames] == [1, 2, 3]
    got = [b.receive(f) for f in frames]
    assert got == [Delivery(Channel.SHELL, (b"m%d" % i,)) for i in range(3)]
    assert b.last_received == 3


def test_data_frames_carry_the_ack_and_free_the_replay_buffer() -> None:
    a, b = TunnelSession(), TunnelSession()
    for _i in range(5):
        b.receive(a.send(Channel.SHELL, [b"x" * 10]))
    assert a.unacked_frames == 5
    a.receive(b.send(Channel.IOPUB, [b"reply"]))  # carries ack=5
    assert a.unacked_frames == 0
    assert a.unacked_bytes == 0


def test_ack_frame_frees_the_buffer_without_a_delivery() -> None:
    a, b = TunnelSession(), TunnelSession()
    b.receive(a.send(Channel.SHELL, [b"x"]))
    assert b.ack_pending
    assert a.receive(b.ack_frame()) is None
    assert a.unacked_frames == 0
    assert not b.ack_pending


def test_ack_is_due_after_enough_frames_or_bytes() -> None:
    a, b = TunnelSession(), TunnelSession(ack_every_frames=3, ack_every_bytes=10**9)
    b.receive(a.send(Channel.IOPUB, [b"1"]))
    b.receive(a.send(Channel.IOPUB, [b"2"]))
    assert not b.ack_due()
    b.receive(a.send(Channel.IOPUB, [b"3"]))
    assert b.ack_due()
    c = TunnelSession(ack_every_bytes=1000)
    c.receive(a.send(Channel.IOPUB, [b"x" * 2000]))
    assert c.ack_due()


def test_resume_replays_exactly_what_the_peer_missed() -> None:
    a, b = TunnelSession(), TunnelSession()
    sent = [a.send(Channel.IOPUB, [b"%d" % i]) for i in range(10)]
    for f in sent[:4]:
        b.receive(f)  # frames 5..10 lost in the cut
    replay = a.replay_after(b.last_received)
    assert [decode_frame(f).seq for f in replay] == list(range(5, 11))
    assert [b.receive(f).parts for f in replay] == [(b"%d" % i,) for i in range(4, 10)]  # type: ignore[union-attr]
    assert b.duplicates == 0
    assert b.gaps == []


def test_duplicates_from_a_replay_are_dropped_and_counted() -> None:
    a, b = TunnelSession(), TunnelSession()
    sent = [a.send(Channel.SHELL, [b"x"]) for _ in range(3)]
    for f in sent:
        b.receive(f)
    for f in a.replay_after(1):
        assert b.receive(f) is None
    assert b.duplicates == 2
    assert b.last_received == 3


def test_overflow_drops_oldest_and_the_receiver_sees_the_gap() -> None:
    a = TunnelSession(replay_limit_bytes=200)
    b = TunnelSession()
    sent = [a.send(Channel.IOPUB, [b"y" * 50]) for _ in range(10)]  # ~82 bytes each
    assert a.dropped_frames > 0
    assert a.unacked_bytes <= 200
    replay = a.replay_after(0)
    assert len(replay) == 10 - a.dropped_frames
    for f in replay:
        b.receive(f)
    assert b.gaps == [Gap(1, a.dropped_frames)]
    assert b.last_received == 10
    assert sent[-1] == replay[-1]


def test_peer_claiming_unsent_frames_is_a_protocol_error() -> None:
    a = TunnelSession()
    a.send(Channel.SHELL, [b"x"])
    with pytest.raises(ProtocolError, match="different session"):
        a.replay_after(5)
    liar = TunnelSession()
    liar.last_received = 9  # acks nine frames when only one was sent
    with pytest.raises(ProtocolError, match="never sent"):
        a.receive(liar.ack_frame())


def test_oversized_message_is_refused_at_send() -> None:
    a = TunnelSession(max_frame_bytes=100)
    with pytest.raises(ProtocolError, match="frame limit"):
        a.send(Channel.IOPUB, [b"z" * 200])
    assert a.next_seq == 1  # nothing was numbered


def test_ack_frames_are_not_sendable_as_data() -> None:
    with pytest.raises(ProtocolError):
        TunnelSession().send(Channel.ACK, [])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.binary(max_size=30)), min_size=1, max_size=40),
    st.lists(st.integers(min_value=0, max_value=40), max_size=5),
)
def test_any_cut_pattern_delivers_every_message_once_in_order(
    msgs: list[tuple[bool, bytes]], cuts: list[int]
) -> None:
    """Sender -> lossy link (drops a frame whenever a cut happens) -> receiver, with resumes."""
    a, b = TunnelSession(), TunnelSession()
    delivered: list[bytes] = []
    cut_at = set(cuts)
    for i, (_, body) in enumerate(msgs):
        data = a.send(Channel.IOPUB, [body])
        if i in cut_at:
            # link down: this frame is lost; on resume the sender replays what b lacks
            for f in a.replay_after(b.last_received):
                d = b.receive(f)
                if d is not None:
                    delivered.append(d.parts[0])
            continue
        d = b.receive(data)
        if d is not None:
            delivered.append(d.parts[0])
    for f in a.replay_after(b.last_received):
        d = b.receive(f)
        if d is not None:
            delivered.append(d.parts[0])
    assert delivered == [body for _, body in msgs]
    assert b.gaps == []
