"""Grant codes: a credit-pool Grant a course admin signed, as one copy-pasteable string.

``gpmgrant1.<base64url(JSON)>`` carrying the EIP-712 ``Grant(poolId, student, cap, expiry,
provider)``, the admin's signature, and the chain id and escrow it is valid on (so a code for
another network fails here with a clear message rather than as a revert). Nothing secret is in
it: the grant only ever pays channels opened by ``student``'s wallet.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from jupyter_gpumarket.core import eip712, safejson
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["PREFIX", "GrantCode", "issue_grant"]

PREFIX = "gpmgrant1."
ZERO_ADDRESS = "0x" + "00" * 20
_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")
_B32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIG = re.compile(r"^0x[0-9a-fA-F]{130}$")
_MAX_CODE_BYTES = 4096  # a real code is about 500 bytes of JSON


@dataclass(frozen=True)
class GrantCode:
    chain_id: int
    escrow: str
    pool_id: str  # 0x + 32 bytes
    student: str
    cap: int
    expiry: int  # unix seconds (block time)
    provider: str  # zero address = any provider
    signature: str  # the pool admin's, 0x + 65 bytes

    def __post_init__(self) -> None:
        ok = (
            _int(self.chain_id)
            and _int(self.cap)
            and _int(self.expiry)
            and isinstance(self.escrow, str)
            and bool(_ADDR.match(self.escrow))
            and isinstance(self.student, str)
            and bool(_ADDR.match(self.student))
            and isinstance(self.provider, str)
            and bool(_ADDR.match(self.provider))
            and isinstance(self.pool_id, str)
            and bool(_B32.match(self.pool_id))
            and isinstance(self.signature, str)
            and bool(_SIG.match(self.signature))
        )
        if not ok:
            raise ConfigError("the grant code is damaged: ask your course admin for it again")

    def encode(self) -> str:
        raw = json.dumps(asdict(self), separators=(",", ":")).encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, code: str) -> GrantCode:
        code = (code or "").strip()
        if not code.startswith(PREFIX):
            raise ConfigError(f"{code[:24]!r}… is not a grant code (they start with {PREFIX})")
        body = code[len(PREFIX) :]
        if len(body) > 2 * _MAX_CODE_BYTES:
            raise ConfigError("that is too long for a grant code: copy just the code, once")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            obj: Any = safejson.loads(raw, "grant code", max_bytes=_MAX_CODE_BYTES)
            return cls(**obj)
        except (ValueError, TypeError, binascii.Error):
            raise ConfigError(
                "the grant code is damaged (copy it again, all of it) or from a newer version"
            ) from None

    @property
    def any_provider(self) -> bool:
        return int(self.provider, 16) == 0

    def check_for(self, *, chain_id: int, escrow: str, student: str, provider: str) -> None:
        """Fail early, with what to do, where the escrow would revert."""
        if (chain_id, escrow.lower()) != (self.chain_id, self.escrow.lower()):
            raise ConfigError(
                f"this grant is for chain {self.chain_id} escrow {self.escrow}, not the selected "
                f"network (chain {chain_id}, escrow {escrow}): pick the course's network"
            )
        if student.lower() != self.student.lower():
            raise ConfigError(
                f"this grant is for wallet {self.student}, not {student}: use that wallet "
                "(GPUMARKET_WALLET) or ask for a grant for yours"
            )
        if not self.any_provider and provider.lower() != self.provider.lower():
            raise ConfigError(
                f"this grant pays only provider {self.provider}: pick one of its offers"
            )


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def issue_grant(
    admin_key: bytes | str,
    domain: eip712.Domain,
    *,
    pool_id: bytes,
    student: str,
    cap: int,
    expiry: int,
    provider: str = ZERO_ADDRESS,
) -> GrantCode:
    """Sign a Grant with the pool admin's key (pure: no chain access)."""
    typed = eip712.grant(
        domain, pool_id=pool_id, student=student, cap=cap, expiry=expiry, provider=provider
    )
    sig = eip712.sign_typed_data(admin_key, typed)
    return GrantCode(
        chain_id=domain.chain_id,
        escrow=domain.verifying_contract,
        pool_id="0x" + bytes(pool_id).hex(),
        student=typed["message"]["student"],
        cap=cap,
        expiry=expiry,
        provider=typed["message"]["provider"],
        signature="0x" + sig.hex(),
    )
