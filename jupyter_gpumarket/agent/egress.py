"""Keep sandboxed kernels off the agent's own port when they share the host's network.

With ``egress="none"`` a kernel has its own empty network namespace and cannot reach the agent at
all. With ``egress="full"`` it shares the host's network, so a root agent adds an nftables table
that rejects TCP from the kernel slot users to the agent's port on any local address (the other
traffic of those users, and everyone else's, is untouched). :func:`nft_ruleset` is pure; the
:class:`PortGuard` shell runs ``nft``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence

from jupyter_gpumarket.agent.sandbox import SandboxPolicy
from jupyter_gpumarket.agent.slots import KernelSlot
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["PortGuard", "nft_ruleset", "table_name"]

log = logging.getLogger(__name__)


def table_name(port: int) -> str:
    return f"gpumarket_agent_{port}"


def nft_ruleset(uids: Sequence[int], port: int) -> str:
    """An nft script: slot users' TCP to ``port`` on this host's addresses gets a reset."""
    if not uids or any(not isinstance(u, int) or u <= 0 for u in uids):
        raise ConfigError(f"the port guard needs unprivileged slot uids, got {list(uids)!r}")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"the port guard needs a TCP port, got {port!r}")
    users = ", ".join(str(u) for u in sorted(set(uids)))
    return (
        f"table inet {table_name(port)} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    meta skuid {{ {users} }} tcp dport {port} fib daddr type local "
        "reject with tcp reset\n"
        "  }\n"
        "}\n"
    )


class PortGuard:
    """The installed nft table for one agent; :meth:`remove` takes it away."""

    def __init__(self, nft: str, port: int) -> None:
        self._nft = nft
        self.port = port

    @classmethod
    def for_agent(
        cls, sandbox: SandboxPolicy | None, slots: Sequence[KernelSlot], port: int
    ) -> PortGuard | None:
        """The guard an agent needs: sandboxed kernels on the host network as slot users."""
        uids = [s.uid for s in slots if s.uid is not None]
        if sandbox is None or sandbox.egress != "full":
            return None
        if not uids:
            log.warning(
                "kernels with egress=full run as the agent's uid and can reach its port %d "
                "(TLS and auth still apply); use --egress none to cut them off",
                port,
            )
            return None
        return cls.install(uids, port)

    @classmethod
    def install(cls, uids: Sequence[int], port: int) -> PortGuard | None:
        """Install the guard, or log why it cannot be and return None."""
        nft = shutil.which("nft")
        if os.geteuid() != 0 or nft is None:
            log.warning(
                "kernels with egress=full can reach the agent's port %d (TLS and auth still "
                "apply): install nftables and run the agent as root, or use --egress none",
                port,
            )
            return None
        guard = cls(nft, port)
        guard.remove()  # a table left by an agent that was SIGKILLed on this port
        res = subprocess.run(
            [nft, "-f", "-"], input=nft_ruleset(uids, port), capture_output=True, text=True
        )
        if res.returncode != 0:
            log.warning("could not guard the agent's port with nft: %s", res.stderr.strip())
            return None
        log.info("kernel slot users cannot connect to the agent's port %d (nft)", port)
        return guard

    def remove(self) -> None:
        subprocess.run(
            [self._nft, "delete", "table", "inet", table_name(self.port)], capture_output=True
        )
