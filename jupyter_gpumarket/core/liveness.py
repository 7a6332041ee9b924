"""Is the tunnel's link alive? Judged by progress, never by one ping's round trip (sans-I/O).

A ping answered late is no sign of a dead link: on a slow link a pong waits behind megabytes
of kernel output queued in the peer's socket, so a keepalive with a pong deadline declares a
busy, healthy link dead (measured: 6 false reconnects in a 20 MB output at 10 Mbit/s). What
proves the peer alive is that *bytes arrive from it*: any bytes, data frames, acks, pings or
pongs, counted where the transport hands them over (a 100 MB message still counts while it is
half received). The rules, checked every tick:

.. code-block:: text

    condition (now = the tick's time)                      action
    nothing received for ``silence_timeout`` s             DEAD: treat the link as down, once
    declared dead, then bytes received again               REVIVED: the same link is back
    nothing received for ``interval`` s, no probe since    PING: the peer answers at once
    something received, nothing sent for ``interval`` s    HEARTBEAT: an unsolicited pong
    otherwise                                              NOTHING

The heartbeat is what keeps a busy sender's view honest: while it pushes output, its own pings
queue behind its data, but the receiver, which reads that data, sends a heartbeat at least once
per ``interval``, and heartbeats travel the uncongested direction. A silent link (a stall that
holds bytes, a black hole, a dead peer) is DEAD after ``silence_timeout`` s plus one tick: the
shell reports the link lost and looks for a new connection, but may keep this one open and
keep probing it (a PING per interval), because a stalled path that returns delivers what it
held at once, with no new handshake, just as TCP rides out a stall. Bytes that arrive after
DEAD make the next poll REVIVED, and the rules start over.
"""

from __future__ import annotations

import enum

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_SILENCE_TIMEOUT", "Liveness", "LivenessAction"]

DEFAULT_INTERVAL = 1.0
DEFAULT_SILENCE_TIMEOUT = 4.0


class LivenessAction(enum.Enum):
    NOTHING = "nothing"
    PING = "ping"
    HEARTBEAT = "heartbeat"
    DEAD = "dead"
    REVIVED = "revived"


class Liveness:
    """Progress bookkeeping of one connection; the shell reports bytes and asks :meth:`poll`."""

    def __init__(
        self,
        now: float,
        *,
        interval: float = DEFAULT_INTERVAL,
        silence_timeout: float = DEFAULT_SILENCE_TIMEOUT,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        if silence_timeout <= interval:
            raise ValueError(
                f"silence_timeout ({silence_timeout} s) must exceed the probe interval "
                f"({interval} s), or a quiet but healthy link is declared dead"
            )
        self.interval = interval
        self.silence_timeout = silence_timeout
        self.last_received = now  # a new connection just spoke (the handshake)
        self.last_sent = now
        self.last_probe = now
        self.dead = False  # declared silent, and nothing received since
        self.dead_at = 0.0

    def received(self, when: float) -> None:
        """Bytes arrived from the peer at ``when`` (the transport's time, may be stale)."""
        self.last_received = max(self.last_received, when)

    def sent(self, when: float) -> None:
        """We wrote something to the peer at ``when``."""
        self.last_sent = max(self.last_sent, when)

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.last_received)

    def poll(self, now: float) -> LivenessAction:
        """What to do now. DEAD comes once per silence; PING and HEARTBEAT count as sent."""
        if self.dead:
            if self.last_received > self.dead_at:
                self.dead = False
                self.last_probe = self.last_sent = now
                return LivenessAction.REVIVED
            if now - self.last_probe >= self.interval:
                self.last_probe = self.last_sent = now
                return LivenessAction.PING
            return LivenessAction.NOTHING
        silent = now - self.last_received
        if silent > self.silence_timeout:
            self.dead = True
            self.dead_at = self.last_received
            self.last_probe = now
            return LivenessAction.DEAD
        if silent >= self.interval and now - self.last_probe >= self.interval:
            self.last_probe = self.last_sent = now
            return LivenessAction.PING
        if now - self.last_sent >= self.interval:
            self.last_sent = now
            return LivenessAction.HEARTBEAT
        return LivenessAction.NOTHING
