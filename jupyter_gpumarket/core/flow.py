"""How much the tunnel may write ahead of the peer's acks, sized from the measured rate (sans-I/O).

Without a bound, a kernel's 20 MB of output is written to the socket at once; on a 10 Mbit/s
link it then sits for 16 s in socket buffers, and everything sent after it (an execute_reply,
an interrupt, a voucher) waits behind it. The sender instead keeps at most ``window`` bytes
written but not acknowledged by the peer's cumulative ack (the session's seq/ack, no new
frame): ``window = clamp(rate * target_seconds, min_bytes, max_bytes)``, where ``rate`` is
the delivery rate measured from acks while data was outstanding, over the last
``2 * target_seconds``. So the queue ahead of a new message is about ``target_seconds`` of the
link's own speed: a few seconds on a slow WAN link, the full ``max_bytes`` on loopback.

A frame bigger than the window still goes out when nothing is in flight (no deadlock); ACK
frames are never held (the peer's window depends on them).
"""

from __future__ import annotations

from collections import deque

__all__ = ["FlowWindow"]

MIB = 1024 * 1024
_MIN_SPAN = 0.2  # seconds of acks a rate sample needs (one ack is no rate)


class FlowWindow:
    """Bytes in flight (written, not yet acked) and the window they may fill."""

    def __init__(
        self,
        *,
        target_seconds: float = 2.0,
        min_bytes: int = 2 * MIB,
        max_bytes: int = 32 * MIB,
    ) -> None:
        if target_seconds <= 0 or not 0 < min_bytes <= max_bytes:
            raise ValueError(
                f"need target_seconds > 0 and 0 < min_bytes <= max_bytes, got "
                f"{target_seconds}, {min_bytes}, {max_bytes}"
            )
        self.target_seconds = target_seconds
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.rate = 0.0  # bytes/s, 0 until measured
        self.written = 0  # cumulative bytes written on this connection
        self.delivered = 0  # cumulative bytes the peer acknowledged
        self._marks: deque[tuple[int, int]] = deque()  # (seq, self.written after it)
        self._samples: deque[tuple[float, int]] = deque()  # (time, delivered) while busy

    @property
    def in_flight(self) -> int:
        return self.written - self.delivered

    @property
    def window(self) -> int:
        return int(min(self.max_bytes, max(self.min_bytes, self.rate * self.target_seconds)))

    def may_write(self, nbytes: int) -> bool:
        in_flight = self.in_flight
        return in_flight == 0 or in_flight + nbytes <= self.window

    def reset(self) -> None:
        """A new connection: nothing of the old one is in flight (the rate is kept)."""
        self.written = self.delivered = 0
        self._marks.clear()
        self._samples.clear()

    def on_written(self, seq: int, nbytes: int, now: float) -> None:
        """A data frame with ``seq`` and ``nbytes`` was handed to the connection."""
        if self.in_flight == 0:
            self._samples.clear()
            self._samples.append((now, self.delivered))
        self.written += nbytes
        self._marks.append((seq, self.written))

    def on_acked(self, ack: int, now: float) -> None:
        """The peer's cumulative ack is now ``ack``."""
        marks = self._marks
        delivered = self.delivered
        while marks and marks[0][0] <= ack:
            delivered = marks.popleft()[1]
        if delivered == self.delivered:
            return
        self.delivered = delivered
        samples = self._samples
        if not samples:
            return
        samples.append((now, delivered))
        horizon = now - 2 * self.target_seconds
        while len(samples) > 2 and samples[1][0] <= horizon:
            samples.popleft()
        (t0, d0), (t1, d1) = samples[0], samples[-1]
        if t1 - t0 >= _MIN_SPAN:
            self.rate = (d1 - d0) / (t1 - t0)
        if self.in_flight == 0:
            samples.clear()  # idle from here: the next burst starts a new sample
