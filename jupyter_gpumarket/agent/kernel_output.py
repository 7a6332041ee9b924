"""What a kernel writes to its stdout/stderr, into the agent's log: bounded and escaped.

A kernel's fds 1 and 2 are a pipe the agent reads, never the agent's own log file: an open fd of
that file inside the sandbox would let the renter truncate the provider's log (``ftruncate``),
write past any quota into it, or forge lines that look like the agent's. Here each line goes to
the log prefixed with its kernel, with control characters escaped, up to a per-kernel budget;
the rest is read and dropped (so a chatty kernel never blocks on a full pipe).
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["LOG_BUDGET_BYTES", "drain_output", "log_line"]

log = logging.getLogger("jupyter_gpumarket.agent.kernels")

LOG_BUDGET_BYTES = 64 * 1024  # per kernel generation
_MAX_LINE = 1000
_CHUNK = 65536


def log_line(raw: bytes) -> str:
    """One line of kernel output as it may appear in the agent's log (printable, bounded)."""
    text = raw[:_MAX_LINE].decode("utf-8", errors="replace")
    safe = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return safe + (" [...]" if len(raw) > _MAX_LINE else "")


async def drain_output(
    stream: asyncio.StreamReader, label: str, budget: int = LOG_BUDGET_BYTES
) -> None:
    """Read ``stream`` to its end; log its lines as ``label: ...`` within ``budget`` bytes."""
    pending, left = b"", budget
    while chunk := await stream.read(_CHUNK):
        if left < 0:
            continue  # over budget: read on so the kernel never blocks, log nothing
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) > _MAX_LINE:  # a line without end: log its start, drop the rest
            lines.append(pending)
            pending = b""
        for line in lines:
            left -= len(line) + 1
            if left < 0:
                log.info("%s: output past %d bytes is not logged", label, budget)
                break
            log.info("%s: %s", label, log_line(line))
    if pending and left >= len(pending):
        log.info("%s: %s", label, log_line(pending))
