"""EIP-712 typed data of the escrow (Voucher, OpenChannel, Grant) and the token's Permit.

Pure builders: each returns the ``full_message`` dict that eth-account's ``encode_typed_data``
(and ethers' ``signTypedData``) take. The type strings here and in ``contracts/Escrow.vy`` must
match; tests sign with these builders and have the contract verify the signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import is_address, keccak, to_checksum_address

from jupyter_gpumarket.exceptions import PaymentError

__all__ = [
    "ESCROW_NAME",
    "ESCROW_VERSION",
    "MAX_RELAY_FEE_DIVISOR",
    "Domain",
    "channel_id_for",
    "grant",
    "grant_hash",
    "open_channel",
    "open_channel_nonce",
    "permit",
    "recover_signer",
    "sign_typed_data",
    "signature_problem",
    "voucher",
    "voucher_signer_ok",
]

ESCROW_NAME = "GpuMarketEscrow"
ESCROW_VERSION = "1"

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
VOUCHER_TYPE = [
    {"name": "channelId", "type": "bytes32"},
    {"name": "cumulativeAmount", "type": "uint256"},
]
OPEN_CHANNEL_TYPE = [
    {"name": "renter", "type": "address"},
    {"name": "provider", "type": "address"},
    {"name": "token", "type": "address"},
    {"name": "deposit", "type": "uint256"},
    {"name": "sessionKey", "type": "address"},
    {"name": "relayFee", "type": "uint256"},
    {"name": "poolId", "type": "bytes32"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
GRANT_TYPE = [
    {"name": "poolId", "type": "bytes32"},
    {"name": "student", "type": "address"},
    {"name": "cap", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
    {"name": "provider", "type": "address"},
]
PERMIT_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
_GRANT_TYPEHASH = keccak(
    text="Grant(bytes32 poolId,address student,uint256 cap,uint256 expiry,address provider)"
)
_UINT256_MAX = 2**256 - 1
MAX_RELAY_FEE_DIVISOR = 10  # Escrow: relay_fee <= deposit // 10


def _address(field: str, value: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise PaymentError(f"{field} must be a 0x address, got {value!r}")
    return to_checksum_address(value)


def _uint(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT256_MAX:
        raise PaymentError(f"{field} must be an int in 0..2**256-1, got {value!r}")
    return value


def _bytes32(field: str, value: bytes | str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise PaymentError(f"{field} must be 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Domain:
    """An EIP-712 domain: name, version, chain id and the verifying contract."""

    chain_id: int
    verifying_contract: str
    name: str = ESCROW_NAME
    version: str = ESCROW_VERSION

    def __post_init__(self) -> None:
        _uint("chain_id", self.chain_id)
        object.__setattr__(
            self, "verifying_contract", _address("verifying_contract", self.verifying_contract)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def _message(
    domain: Domain, primary: str, fields: list[dict[str, str]], data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, primary: fields},
        "primaryType": primary,
        "domain": domain.as_dict(),
        "message": data,
    }


def voucher(domain: Domain, channel_id: bytes | str, cumulative_amount: int) -> dict[str, Any]:
    """``Voucher(bytes32 channelId,uint256 cumulativeAmount)``, signed by the session key."""
    return _message(
        domain,
        "Voucher",
        VOUCHER_TYPE,
        {
            "channelId": _bytes32("channel_id", channel_id),
            "cumulativeAmount": _uint("cumulative_amount", cumulative_amount),
        },
    )


def open_channel(
    domain: Domain,
    *,
    renter: str,
    provider: str,
    token: str,
    deposit: int,
    session_key: str,
    relay_fee: int,
    deadline: int,
    pool_id: bytes | str = bytes(32),
) -> dict[str, Any]:
    """``OpenChannel(...)`` the renter signs so a relayer can call ``openFor`` (``pool_id``
    zero: the renter's wallet pays) or ``openFromPoolFor`` (``pool_id``: that pool pays).

    Its ``nonce`` is :func:`open_channel_nonce` of the session key: a session key opens one
    channel ever, so the signature is single-use without an on-chain counter. The escrow pays
    ``relay_fee`` to ``provider`` and takes at most a tenth of the deposit
    (:data:`MAX_RELAY_FEE_DIVISOR`).
    """
    typed = _message(
        domain,
        "OpenChannel",
        OPEN_CHANNEL_TYPE,
        {
            "renter": _address("renter", renter),
            "provider": _address("provider", provider),
            "token": _address("token", token),
            "deposit": _uint("deposit", deposit),
            "sessionKey": _address("session_key", session_key),
            "relayFee": _uint("relay_fee", relay_fee),
            "poolId": _bytes32("pool_id", pool_id),
            "nonce": open_channel_nonce(session_key),
            "deadline": _uint("deadline", deadline),
        },
    )
    if relay_fee > deposit // MAX_RELAY_FEE_DIVISOR:
        raise PaymentError(
            f"relay_fee ({relay_fee}) must be at most a tenth of the deposit ({deposit})"
        )
    return typed


def open_channel_nonce(session_key: str) -> int:
    """The OpenChannel ``nonce`` the Escrow expects: the session key's address as a number."""
    return int(_address("session_key", session_key), 16)


def grant(
    domain: Domain, *, pool_id: bytes | str, student: str, cap: int, expiry: int, provider: str
) -> dict[str, Any]:
    """``Grant(...)`` a pool admin signs for a student (``provider`` zero address = any)."""
    return _message(
        domain,
        "Grant",
        GRANT_TYPE,
        {
            "poolId": _bytes32("pool_id", pool_id),
            "student": _address("student", student),
            "cap": _uint("cap", cap),
            "expiry": _uint("expiry", expiry),
            "provider": _address("provider", provider),
        },
    )


def permit(
    domain: Domain, *, owner: str, spender: str, value: int, nonce: int, deadline: int
) -> dict[str, Any]:
    """EIP-2612 ``Permit``; ``domain`` is the token's (TestUSD: name "TestUSD", version "1")."""
    return _message(
        domain,
        "Permit",
        PERMIT_TYPE,
        {
            "owner": _address("owner", owner),
            "spender": _address("spender", spender),
            "value": _uint("value", value),
            "nonce": _uint("nonce", nonce),
            "deadline": _uint("deadline", deadline),
        },
    )


def grant_hash(
    *, pool_id: bytes | str, student: str, cap: int, expiry: int, provider: str
) -> bytes:
    """The Grant's struct hash: the key of ``Escrow.grant_spent``."""
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "address", "uint256", "uint256", "address"],
            [
                _GRANT_TYPEHASH,
                _bytes32("pool_id", pool_id),
                _address("student", student),
                _uint("cap", cap),
                _uint("expiry", expiry),
                _address("provider", provider),
            ],
        )
    )


def channel_id_for(renter: str, session_key: str) -> bytes:
    """The id ``Escrow`` gives a channel: keccak256(abi_encode(renter, session_key))."""
    return keccak(
        abi_encode(
            ["address", "address"],
            [_address("renter", renter), _address("session_key", session_key)],
        )
    )


def sign_typed_data(private_key: bytes | str, typed_data: dict[str, Any]) -> bytes:
    """65-byte ``r || s || v`` signature of ``typed_data`` (pure: no I/O)."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    signed = Account.sign_message(encode_typed_data(full_message=typed_data), private_key)
    signature = bytes(signed.signature)
    problem = signature_problem(signature)  # eth-account signs low-s, v 27/28: keep it so
    if problem is not None:
        raise PaymentError(f"the signer made a signature the escrow refuses: {problem}")
    return signature


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2  # snekmate's _MALLEABILITY_THRESHOLD


def signature_problem(signature: bytes) -> str | None:
    """Why the Escrow's ECDSA (snekmate ``_recover_sig`` + the ``ecrecover`` precompile) would
    refuse this ``r || s || v`` signature; None when its form is acceptable.

    The contract accepts exactly: 65 bytes, ``v`` in {27, 28}, ``0 < r < n``, ``0 < s <= n/2``
    (low s), and a signature that recovers to a non-zero address. (It also takes EIP-2098
    64-byte compact signatures; off chain those are refused: no signer of ours makes them,
    and refusing more than the contract never costs the provider money.)
    """
    if not isinstance(signature, bytes | bytearray):
        return f"a signature is bytes, got {type(signature).__name__}"
    if len(signature) != 65:
        return f"a signature is 65 bytes (r, s, v), got {len(signature)}"
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        return f"v must be 27 or 28 (the escrow's rule), got {v}"
    if not 0 < r < SECP256K1_N:
        return "r is out of range"
    if not 0 < s <= _HALF_N:
        return "s is zero or in the upper half (a malleated high-s signature)"
    return None


def recover_signer(typed_data: dict[str, Any], signature: bytes) -> str:
    """The address that signed ``typed_data``; PaymentError for a signature the Escrow would
    refuse (see :func:`signature_problem`). The one place the project recovers a signer:
    Voucher, TunnelHello, OpenChannel, Permit and Grant all go through it."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    problem = signature_problem(signature)
    if problem is not None:
        raise PaymentError(f"unreadable signature ({problem}); ask the signer to sign again")
    try:
        signer = str(
            Account.recover_message(
                encode_typed_data(full_message=typed_data), signature=bytes(signature)
            )
        )
    except Exception as exc:  # eth-keys / eth-account raise several types for bad bytes
        raise PaymentError(f"unreadable signature ({exc}); ask the signer to sign again") from None
    if int(signer, 16) == 0:
        raise PaymentError("unreadable signature (it recovers to no address); sign again")
    return signer


def voucher_signer_ok(channel_id: bytes | str, renter: str, signer: str) -> bool:
    """The Escrow's rule (escrow_channels._check_voucher): a voucher is signed by the renter
    or by the key the channel id binds (keccak256(abi_encode(renter, key)) == id). A channel's
    session key never changes, so nothing else counts."""
    cid = _bytes32("channel_id", channel_id)
    signer = _address("signer", signer)
    if signer == _address("renter", renter):
        return True
    return channel_id_for(renter, signer) == cid
