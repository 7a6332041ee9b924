"""The market's pre-auth first messages: the live ``probe`` and the seeded ``challenge``.

Both are sent by anyone (no token, no channel) as the first text message of a pinned wss
connection, instead of a hello. The agent answers and closes; it rate-limits both.

.. code-block:: text

    renter -> agent  {"op": "probe", "nonce": hex(16..32 bytes)}
    agent -> renter  {"op": "probe_reply", "version", "provider", "signature",
                      "free_kernels", "free_gpus", "sandboxed", "isolation", "simulated",
                      "inventory": {"gpus": [...], "driver_version", "cuda_driver_version"}}
                     then closes (1000). Refused: close 1013 (rate limited) with the reason.

    renter -> agent  {"op": "challenge", "version": 1, "setup": MatmulSpec.setup_json()}
    then the steps of core.challenge / core.vram_proof, one JSON text message each:
    agent -> renter  {"op": "ready", "backend": "cuda"|"rocm"|"cpu", "device": str}
    renter -> agent  {"op": "go", "salt": hex}                      (renter's clock starts)
    agent -> renter  {"op": "commit", "round_digests": [hex]}       (clock stops)
    renter -> agent  {"op": "sample", "rows": [[r, i]], "cols": [j]}
    agent -> renter  {"op": "reveal", "row_sums": {...}, "rows": [...]}
    renter -> agent  {"op": "setup", "setup": ...}  (the next precision: ready, go, ... again)
    renter -> agent  {"op": "vram", "seed": hex, "fill_mib": int}
    agent -> renter  {"op": "vram_ready"} | {"op": "vram_refused", "reason": str}
    renter -> agent  {"op": "slices", "offsets": [...], "length": int}  (clock starts)
    agent -> renter  {"op": "answers", "answers": [hex]}                (clock stops)
    renter -> agent  {"op": "done"}; the agent closes. Any step refused: {"op": "refused",
                     "reason": str} then close.

``provider`` and ``signature`` (paid agents): an EIP-191 signature by the provider's account
over :func:`probe_signing_message` (the renter's nonce and the agent's own TLS fingerprint), so
an endpoint copied into another provider's offer cannot answer as that provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = [
    "CHALLENGE_VERSION",
    "MAX_AGENT_STEP_BYTES",
    "PROBE_REPLY_MAX_BYTES",
    "ChallengeRequest",
    "ProbeRequest",
    "probe_signing_message",
]

PROBE_REPLY_MAX_BYTES = 64 * 1024  # 64 GPUs of inventory fit in ~20 KiB
MAX_AGENT_STEP_BYTES = 4 * 1024  # ready / commit headers / vram_ready: renter-side cap per step
CHALLENGE_VERSION = 1
_NONCE = re.compile(r"[0-9a-f]{32,64}")


@dataclass(frozen=True)
class ProbeRequest:
    nonce: str
    op: str = field(default="probe", init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, str) or not _NONCE.fullmatch(self.nonce):
            raise ProtocolError("probe.nonce must be 32 to 64 lowercase hex digits")


@dataclass(frozen=True)
class ChallengeRequest:
    setup: dict[str, Any]
    version: int = CHALLENGE_VERSION
    op: str = field(default="challenge", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.version != CHALLENGE_VERSION:
            raise ProtocolError(f"challenge.version must be {CHALLENGE_VERSION}")
        if not isinstance(self.setup, dict):
            raise ProtocolError("challenge.setup must be an object")


def probe_signing_message(nonce: str, tls_fingerprint: str) -> bytes:
    """What a paid agent signs (EIP-191 personal message) to answer a probe as its provider."""
    return f"gpumarket probe v1\nnonce: {nonce}\ntls: {tls_fingerprint.lower()}".encode()
