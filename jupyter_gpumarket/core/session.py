"""Tunnel session: sequence numbers, cumulative acks and a bounded replay buffer (sans-I/O).

Both ends of the tunnel hold one ``TunnelSession``. It turns outgoing messages into frames
(:meth:`send`), turns incoming frames into deliveries (:meth:`receive`), and remembers every
frame the peer has not acknowledged yet, so that after a reconnect each side can say the last
sequence number it received (:attr:`last_received`) and the other replays the rest
(:meth:`replay_after`). Nothing is lost or duplicated across a link cut as long as the replay
buffer did not overflow; when it did, the loss is counted and reported, never silent.

The session never touches sockets or clocks: the I/O shells call it and write what it returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from jupyter_gpumarket.core.frames import (
    DEFAULT_MAX_FRAME_BYTES,
    Channel,
    decode_frame,
    encode_frame,
    encode_frame_parts,
)
from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["Delivery", "Gap", "TunnelSession"]

DEFAULT_REPLAY_LIMIT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message received in order, to hand to the local ZMQ side."""

    channel: Channel
    parts: tuple[bytes | memoryview, ...]


@dataclass(frozen=True, slots=True)
class Gap:
    """Frames the peer could no longer replay (its buffer overflowed while the link was down)."""

    first_missing: int
    count: int

    def __post_init__(self) -> None:
        if self.first_missing < 1 or self.count < 1:
            raise ProtocolError(f"invalid gap {self.first_missing}+{self.count}")


class TunnelSession:
    """Sequence/ack/replay state of one side of a tunnel.

    ``replay_limit_bytes`` bounds the memory held for unacknowledged frames; past it the oldest
    frames are dropped and counted in :attr:`dropped_frames` / :attr:`dropped_bytes`.
    ``ack_every_frames`` / ``ack_every_bytes`` say when :meth:`ack_due` asks the shell to send
    a standalone ACK frame (data frames carry the ack for free).
    """

    def __init__(
        self,
        *,
        replay_limit_bytes: int = DEFAULT_REPLAY_LIMIT_BYTES,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        ack_every_frames: int = 64,
        ack_every_bytes: int = 1024 * 1024,
    ) -> None:
        if replay_limit_bytes < 1:
            raise ValueError("replay_limit_bytes must be positive")
        self.replay_limit_bytes = replay_limit_bytes
        self.max_frame_bytes = max_frame_bytes
        self.ack_every_frames = ack_every_frames
        self.ack_every_bytes = ack_every_bytes
        self.next_seq = 1
        self.last_received = 0
        self.peer_acked = 0
        self.dropped_frames = 0
        self.dropped_bytes = 0
        self.duplicates = 0
        self.gaps: list[Gap] = []
        # (seq, the frame's buffers as encode_frame_parts gave them, its size in bytes): the
        # parts are held, not joined, so a large kernel output is never copied to be replayable
        self._replay: deque[tuple[int, list[bytes], int]] = deque()
        self._replay_bytes = 0
        self._unacked_in_frames = 0
        self._unacked_in_bytes = 0

    # -- sending -------------------------------------------------------------------------
    def send(self, channel: Channel, parts: Sequence[bytes]) -> bytes:
        """Frame a message, keep it for replay, and return the bytes to write."""
        return b"".join(self.send_parts(channel, parts))

    def send_parts(self, channel: Channel, parts: Sequence[bytes]) -> list[bytes]:
        """As :meth:`send`, but the frame as buffers to write in order (header, then the parts
        as given, not copied: see :func:`~jupyter_gpumarket.core.frames.encode_frame_parts`)."""
        if channel is Channel.ACK:
            raise ProtocolError("use ack_frame() for ACK frames")
        seq = self.next_seq
        buffers = encode_frame_parts(channel, seq, self.last_received, parts)
        size = sum(len(b) for b in buffers)
        if size > self.max_frame_bytes:
            raise ProtocolError(
                f"a {channel.name} message of {size} bytes exceeds the tunnel's frame limit "
                f"of {self.max_frame_bytes} bytes"
            )
        self.next_seq = seq + 1
        self._replay.append((seq, buffers, size))
        self._replay_bytes += size
        self._trim()
        self._acked_now()
        return buffers

    def ack_frame(self) -> bytes:
        """A standalone ACK frame carrying :attr:`last_received`."""
        self._acked_now()
        return encode_frame(Channel.ACK, 0, self.last_received, ())

    def ack_due(self) -> bool:
        """True when enough has arrived unacknowledged that an ACK frame should go out now."""
        return (
            self._unacked_in_frames >= self.ack_every_frames
            or self._unacked_in_bytes >= self.ack_every_bytes
        )

    @property
    def ack_pending(self) -> bool:
        """True when something arrived that the peer has not seen an ack for."""
        return self._unacked_in_frames > 0

    @property
    def replay_from(self) -> int:
        """The first sequence number still held for replay (next_seq when none is)."""
        return self._replay[0][0] if self._replay else self.next_seq

    def adopt(self, peer_last_received: int, replay_from: int) -> None:
        """Take over numbering from a peer whose earlier partner went away (new process):
        our next frame follows what it received; we accept its replay from ``replay_from``."""
        if self.next_seq != 1 or self.last_received:
            raise ProtocolError("only a fresh session can adopt a peer's numbering")
        self.next_seq = peer_last_received + 1
        self.peer_acked = peer_last_received
        self.last_received = replay_from - 1

    @property
    def unacked_frames(self) -> int:
        return len(self._replay)

    @property
    def unacked_bytes(self) -> int:
        return self._replay_bytes

    # -- receiving -----------------------------------------------------------------------
    def receive(self, data: bytes) -> Delivery | None:
        """Process one incoming frame. Returns the delivery, or None (ACK or duplicate)."""
        frame = decode_frame(data, self.max_frame_bytes)
        self._on_ack(frame.ack)
        if frame.channel is Channel.ACK:
            return None
        if frame.seq <= self.last_received:
            self.duplicates += 1
            return None
        expected = self.last_received + 1
        if frame.seq > expected:
            self.gaps.append(Gap(expected, frame.seq - expected))
        self.last_received = frame.seq
        self._unacked_in_frames += 1
        self._unacked_in_bytes += len(data)
        return Delivery(frame.channel, frame.parts)

    # -- resuming ------------------------------------------------------------------------
    def replay_after(self, peer_last_received: int) -> list[bytes]:
        """Frames to resend after a reconnect, given the last seq the peer says it received."""
        return [b"".join(buffers) for buffers in self.replay_parts_after(peer_last_received)]

    def replay_parts_after(self, peer_last_received: int) -> list[list[bytes]]:
        """As :meth:`replay_after`, each frame as the buffers :meth:`send_parts` returned."""
        if peer_last_received >= self.next_seq:
            raise ProtocolError(
                f"peer claims to have received seq {peer_last_received} but only "
                f"{self.next_seq - 1} were sent: it is a different session"
            )
        self._on_ack(peer_last_received)
        return [buffers for seq, buffers, _ in self._replay if seq > peer_last_received]

    # -- internals -----------------------------------------------------------------------
    def _on_ack(self, ack: int) -> None:
        if ack <= self.peer_acked:
            return
        if ack >= self.next_seq:
            raise ProtocolError(f"peer acked seq {ack}, which was never sent")
        self.peer_acked = ack
        replay = self._replay
        while replay and replay[0][0] <= ack:
            self._replay_bytes -= replay.popleft()[2]

    def _trim(self) -> None:
        replay = self._replay
        while self._replay_bytes > self.replay_limit_bytes and len(replay) > 1:
            size = replay.popleft()[2]
            self._replay_bytes -= size
            self.dropped_frames += 1
            self.dropped_bytes += size

    def _acked_now(self) -> None:
        self._unacked_in_frames = 0
        self._unacked_in_bytes = 0
