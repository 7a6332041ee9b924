"""Course codes that work before the student has a wallet (pure).

An educator signs an EIP-712 ``ClaimableGrant(poolId, claimKey, cap, expiry, provider)`` whose
``claimKey`` is a fresh one-time key; the code (``gpmcode1.<base64url(JSON)>``) carries the
grant, the admin's signature and the claim key's PRIVATE half. Whoever holds the code signs
``Claim(grant, student)`` with that key for its own wallet; the escrow binds the first wallet
claimed on chain (``claimGrant`` / the first ``openFromClaimFor``) and refuses every other
afterwards. The claim key never leaves the student's machine: a provider that relays the
first opening gets a :class:`ClaimTicket` (the grant + the claim signature for that one
wallet), which cannot be turned into a claim for another wallet. Nobody stores the key: the
educator's course file keeps only the claim key's address.

The builders here and ``contracts/escrow_sigs.vy`` must agree (tests sign here and let the
contract verify).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak

from jupyter_gpumarket.core import eip712, safejson
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

__all__ = [
    "CLAIM_PREFIX",
    "CODE_PREFIX",
    "ClaimCode",
    "ClaimTicket",
    "claim",
    "claimable_grant",
    "claimable_grant_hash",
    "issue_claim_code",
]

CODE_PREFIX = "gpmcode1."
CLAIM_PREFIX = "gpmclaim1."
_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")
_B32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIG = re.compile(r"^0x[0-9a-fA-F]{130}$")
_MAX_BYTES = 2048  # a real code is about 450 bytes of JSON

CLAIMABLE_GRANT_TYPE = [
    {"name": "poolId", "type": "bytes32"},
    {"name": "claimKey", "type": "address"},
    {"name": "cap", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
    {"name": "provider", "type": "address"},
]
CLAIM_TYPE = [
    {"name": "grant", "type": "bytes32"},
    {"name": "student", "type": "address"},
]
_CLAIMABLE_GRANT_TYPEHASH = keccak(
    text="ClaimableGrant(bytes32 poolId,address claimKey,uint256 cap,uint256 expiry,"
    "address provider)"
)


def claimable_grant(
    domain: eip712.Domain,
    *,
    pool_id: bytes | str,
    claim_key: str,
    cap: int,
    expiry: int,
    provider: str,
) -> dict[str, Any]:
    """``ClaimableGrant(...)`` a pool admin signs (``provider`` zero address = any)."""
    return eip712._message(
        domain,
        "ClaimableGrant",
        CLAIMABLE_GRANT_TYPE,
        {
            "poolId": eip712._bytes32("pool_id", pool_id),
            "claimKey": eip712._address("claim_key", claim_key),
            "cap": eip712._uint("cap", cap),
            "expiry": eip712._uint("expiry", expiry),
            "provider": eip712._address("provider", provider),
        },
    )


def claimable_grant_hash(
    *, pool_id: bytes | str, claim_key: str, cap: int, expiry: int, provider: str
) -> bytes:
    """The ClaimableGrant's struct hash: the key of ``grant_spent`` and ``grant_holder``."""
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "address", "uint256", "uint256", "address"],
            [
                _CLAIMABLE_GRANT_TYPEHASH,
                eip712._bytes32("pool_id", pool_id),
                eip712._address("claim_key", claim_key),
                eip712._uint("cap", cap),
                eip712._uint("expiry", expiry),
                eip712._address("provider", provider),
            ],
        )
    )


def claim(domain: eip712.Domain, *, grant: bytes | str, student: str) -> dict[str, Any]:
    """``Claim(grant, student)``: the claim key binds ``student``'s wallet to ``grant``."""
    return eip712._message(
        domain,
        "Claim",
        CLAIM_TYPE,
        {"grant": eip712._bytes32("grant", grant), "student": eip712._address("student", student)},
    )


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _match(rx: re.Pattern[str], v: object) -> bool:
    return isinstance(v, str) and bool(rx.match(v))


def _decode(cls: type[Any], prefix: str, what: str, code: str) -> Any:
    code = (code or "").strip()
    if not code.startswith(prefix):
        raise ConfigError(f"{code[:24]!r}… is not a {what} (they start with {prefix})")
    body = code[len(prefix) :]
    if len(body) > 2 * _MAX_BYTES:
        raise ConfigError(f"that is too long for a {what}: copy just the code, once")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        obj: Any = safejson.loads(raw, what, max_bytes=_MAX_BYTES)
        return cls(**obj)
    except (ValueError, TypeError, binascii.Error):
        raise ConfigError(
            f"the {what} is damaged (copy it again, all of it) or from a newer version"
        ) from None


def _encode(obj: Any, prefix: str) -> str:
    raw = json.dumps(asdict(obj), separators=(",", ":")).encode()
    return prefix + base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class _Grant:
    chain_id: int
    escrow: str
    pool_id: str  # 0x + 32 bytes
    claim_key: str  # the claim key's address (what the admin signed)
    cap: int
    expiry: int  # unix seconds (block time)
    provider: str  # zero address = any provider
    signature: str  # the pool admin's, over ClaimableGrant

    def _fields_ok(self) -> bool:
        return (
            _int(self.chain_id)
            and _int(self.cap)
            and _int(self.expiry)
            and _match(_ADDR, self.escrow)
            and _match(_ADDR, self.claim_key)
            and int(self.claim_key, 16) != 0
            and _match(_ADDR, self.provider)
            and _match(_B32, self.pool_id)
            and _match(_SIG, self.signature)
        )

    @property
    def any_provider(self) -> bool:
        return int(self.provider, 16) == 0

    @property
    def domain(self) -> eip712.Domain:
        return eip712.Domain(self.chain_id, self.escrow)

    @property
    def grant_hash(self) -> bytes:
        return claimable_grant_hash(
            pool_id=self.pool_id,
            claim_key=self.claim_key,
            cap=self.cap,
            expiry=self.expiry,
            provider=self.provider,
        )

    def admin_signer(self) -> str:
        """Who signed the grant (the contract requires the pool's admin)."""
        typed = claimable_grant(
            self.domain,
            pool_id=self.pool_id,
            claim_key=self.claim_key,
            cap=self.cap,
            expiry=self.expiry,
            provider=self.provider,
        )
        return eip712.recover_signer(typed, bytes.fromhex(self.signature[2:]))

    def grant_args(self) -> tuple[bytes, str, int, int, str, bytes]:
        """(pool_id, claim_key, cap, expiry, provider, admin_sig) as the escrow takes them."""
        return (
            bytes.fromhex(self.pool_id[2:]),
            self.claim_key,
            self.cap,
            self.expiry,
            self.provider,
            bytes.fromhex(self.signature[2:]),
        )


@dataclass(frozen=True)
class ClaimTicket(_Grant):
    """A claimable grant + the claim key's signature binding one wallet (``student``).
    Safe to hand to a provider: it claims the grant for ``student`` and nobody else."""

    student: str = ""
    claim_sig: str = ""

    def __post_init__(self) -> None:
        if not (
            self._fields_ok()
            and _match(_ADDR, self.student)
            and int(self.student, 16) != 0
            and _match(_SIG, self.claim_sig)
        ):
            raise ConfigError("the course claim is damaged: run `gpumarket course join` again")

    def encode(self) -> str:
        return _encode(self, CLAIM_PREFIX)

    @classmethod
    def decode(cls, code: str) -> ClaimTicket:
        ticket: ClaimTicket = _decode(cls, CLAIM_PREFIX, "course claim", code)
        return ticket

    def claim_problem(self) -> str | None:
        """Why ``claimGrant`` would refuse this claim signature (None: the claim key signed
        Claim(grant, student)); the same rule as the escrow's, off chain."""
        try:
            signer = eip712.recover_signer(
                claim(self.domain, grant=self.grant_hash, student=self.student),
                bytes.fromhex(self.claim_sig[2:]),
            )
        except PaymentError as exc:
            return f"the claim signature is unreadable ({exc})"
        if signer.lower() != self.claim_key.lower():
            return "the claim is not signed by the code's claim key"
        return None

    def check_for(self, *, chain_id: int, escrow: str, student: str, provider: str) -> None:
        """Fail early, with what to do, where the escrow would revert."""
        _check_network(self, chain_id, escrow)
        if student.lower() != self.student.lower():
            raise ConfigError(
                f"this course claim is for wallet {self.student}, not {student}: use that "
                "wallet (GPUMARKET_WALLET)"
            )
        _check_provider(self, provider)


@dataclass(frozen=True)
class ClaimCode(_Grant):
    """What the educator mails: the grant + the claim key's private half (a bearer secret
    until a wallet is bound on chain; afterwards it is worth nothing to anyone else)."""

    claim_secret: str = ""  # 0x + 32 bytes: the claim key's private key

    def __post_init__(self) -> None:
        if not (self._fields_ok() and _match(_B32, self.claim_secret)):
            raise ConfigError("the course code is damaged: ask your course admin for it again")
        try:
            from eth_account import Account

            address = Account.from_key(bytes.fromhex(self.claim_secret[2:])).address
        except (ValueError, TypeError):
            raise ConfigError("the course code is damaged: ask your course admin again") from None
        if address.lower() != self.claim_key.lower():
            raise ConfigError("the course code is damaged (its key does not match its grant)")

    def encode(self) -> str:
        return _encode(self, CODE_PREFIX)

    @classmethod
    def decode(cls, code: str) -> ClaimCode:
        decoded: ClaimCode = _decode(cls, CODE_PREFIX, "course code", code)
        return decoded

    def ticket_for(self, student: str) -> ClaimTicket:
        """Sign Claim(grant, student) with the claim key (pure: no chain access)."""
        typed = claim(self.domain, grant=self.grant_hash, student=student)
        sig = eip712.sign_typed_data(bytes.fromhex(self.claim_secret[2:]), typed)
        fields = {k: v for k, v in asdict(self).items() if k != "claim_secret"}
        return ClaimTicket(
            **fields, student=typed["message"]["student"], claim_sig="0x" + sig.hex()
        )


def _check_network(g: _Grant, chain_id: int, escrow: str) -> None:
    if (chain_id, escrow.lower()) != (g.chain_id, g.escrow.lower()):
        raise ConfigError(
            f"this course code is for chain {g.chain_id} escrow {g.escrow}, not the selected "
            f"network (chain {chain_id}, escrow {escrow}): pick the course's network"
        )


def _check_provider(g: _Grant, provider: str) -> None:
    if not g.any_provider and provider.lower() != g.provider.lower():
        raise ConfigError(f"this course pays only provider {g.provider}: pick one of its offers")


def issue_claim_code(
    admin_key: bytes | str,
    domain: eip712.Domain,
    *,
    pool_id: bytes,
    cap: int,
    expiry: int,
    provider: str,
    claim_secret: bytes | None = None,
) -> ClaimCode:
    """Make a fresh claim key and sign its ClaimableGrant with the pool admin's key."""
    from eth_account import Account

    key = Account.from_key(claim_secret) if claim_secret is not None else Account.create()
    typed = claimable_grant(
        domain, pool_id=pool_id, claim_key=key.address, cap=cap, expiry=expiry, provider=provider
    )
    sig = eip712.sign_typed_data(admin_key, typed)
    return ClaimCode(
        chain_id=domain.chain_id,
        escrow=domain.verifying_contract,
        pool_id="0x" + bytes(pool_id).hex(),
        claim_key=key.address,
        cap=cap,
        expiry=expiry,
        provider=typed["message"]["provider"],
        signature="0x" + sig.hex(),
        claim_secret="0x" + bytes(key.key).hex(),
    )
