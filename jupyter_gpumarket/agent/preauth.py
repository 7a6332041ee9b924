"""What a stranger may cost the agent before it has authenticated.

A connection is *pre-auth* from its websocket handshake until its hello is accepted (dev token
or a signed channel challenge). Until then it may send only small messages (the server's
``max_size`` starts at :data:`PREAUTH_MAX_BYTES` and is raised to the frame limit once the hello
is accepted), it has ``server.HELLO_TIMEOUT`` seconds per message, and it holds one slot of a
:class:`PreauthBudget`: at most :data:`PREAUTH_PER_IP` such connections per client address and
:data:`PREAUTH_TOTAL` in all. A connection over budget is closed with 1013 (try again later).
Authenticated links do not count: a flood of strangers never takes a renter's link down.

Until then websockets reads at most :data:`PREAUTH_MAX_QUEUE` frames ahead of the agent (then
TCP flow control holds the rest in the stranger's own buffers); the accepted hello raises it for
the lease's data path. Worst case held for strangers: ``PREAUTH_TOTAL`` x ``PREAUTH_MAX_QUEUE``
x ``PREAUTH_MAX_BYTES`` = 8 MiB, and nothing proportional to what they send. A paid hello or a
relayed opening has ``server.HELLO_DEADLINE`` in all, the chain reads included.
"""

from __future__ import annotations

from collections import Counter

__all__ = [
    "OPEN_TIMEOUT",
    "PREAUTH_MAX_BYTES",
    "PREAUTH_MAX_QUEUE",
    "PREAUTH_PER_IP",
    "PREAUTH_TOTAL",
    "PreauthBudget",
    "PreauthSlot",
]

PREAUTH_MAX_BYTES = 16 * 1024  # a hello, an auth answer or a relay_open is under 2 KiB
PREAUTH_MAX_QUEUE = 4  # frames websockets reads ahead of a pre-auth connection's handler
PREAUTH_PER_IP = 16
PREAUTH_TOTAL = 128
OPEN_TIMEOUT = 10.0  # seconds for the TLS handshake and the HTTP upgrade


class PreauthSlot:
    """One admitted pre-auth connection; :meth:`release` (idempotent) gives its slot back."""

    def __init__(self, budget: PreauthBudget, ip: str) -> None:
        self._budget, self.ip, self._held = budget, ip, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._budget._release(self.ip)


class PreauthBudget:
    """Counts pre-auth connections per client address and in all."""

    def __init__(self, per_ip: int = PREAUTH_PER_IP, total: int = PREAUTH_TOTAL) -> None:
        if per_ip < 1 or total < per_ip:
            raise ValueError(
                f"pre-auth budget per_ip={per_ip} total={total}: need 1 <= per_ip <= total"
            )
        self.per_ip, self.total = per_ip, total
        self._by_ip: Counter[str] = Counter()
        self.pending = 0

    def admit(self, ip: str) -> PreauthSlot | str:
        """A slot for a new connection from ``ip``, or the reason it is refused."""
        if self._by_ip[ip] >= self.per_ip:
            return f"too many unauthenticated connections from {ip} ({self.per_ip}); retry later"
        if self.pending >= self.total:
            return f"too many unauthenticated connections ({self.total}); retry later"
        self._by_ip[ip] += 1
        self.pending += 1
        return PreauthSlot(self, ip)

    def _release(self, ip: str) -> None:
        self.pending -= 1
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]
