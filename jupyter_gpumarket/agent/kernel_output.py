"""What a kernel writes to its stdout/stderr, into the agent's log: bounded and escaped.

A kernel's fds 1 and 2 are a pipe the agent reads, never the agent's own log file: an open fd of
that file inside the sandbox would let the renter truncate the provider's log (``ftruncate``),
write past any quota into it, or forge lines that look like the agent's. Here each line goes to
the log prefixed with its kernel, with control characters escaped, up to a per-kernel budget;
the rest is read and dropped (so a chatty kernel never blocks on a full pipe).

:class:`OutputPipe` is a plain ``os.pipe`` rather than asyncio's ``PIPE``: with the latter,
``Process.wait()`` would also wait for every process holding the pipe (a daemon the kernel left
behind) to close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

__all__ = ["LOG_BUDGET_BYTES", "OutputPipe", "drain_output", "log_line"]

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


class OutputPipe:
    """A kernel's stdout/stderr: pass :attr:`write_fd` to the child, then :meth:`drain`."""

    def __init__(self) -> None:
        read_fd, self.write_fd = os.pipe()
        self._file = os.fdopen(read_fd, "rb", buffering=0)
        self._transport: asyncio.ReadTransport | None = None
        self._task: asyncio.Future[None] | None = None

    def _close_write_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    async def drain(self, label: str) -> None:
        """Once the child has its copy: log what it writes, as ``label: ...``."""
        self._close_write_end()  # else the pipe never reaches its end
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._file
        )
        self._task = asyncio.ensure_future(drain_output(reader, label))

    def close(self) -> None:
        self._close_write_end()
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()
        else:
            with contextlib.suppress(OSError):
                self._file.close()
