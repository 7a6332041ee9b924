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
    "Domain",
    "channel_id_for",
    "grant",
    "grant_hash",
    "open_channel",
    "open_channel_nonce",
    "permit",
    "recover_signer",
    "sign_typed_data",
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
) -> dict[str, Any]:
    """``OpenChannel(...)`` the renter signs so a relayer can call ``openFor``.

    Its ``nonce`` is :func:`open_channel_nonce` of the session key: a session key opens one
    channel ever, so the signature is single-use without an on-chain counter.
    """
    if relay_fee >= deposit:
        raise PaymentError(f"relay_fee ({relay_fee}) must be below the deposit ({deposit})")
    return _message(
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
            "nonce": open_channel_nonce(session_key),
            "deadline": _uint("deadline", deadline),
        },
    )


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
    return bytes(signed.signature)


def recover_signer(typed_data: dict[str, Any], signature: bytes) -> str:
    """The address that signed ``typed_data``; PaymentError for a malformed signature."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    try:
        return str(
            Account.recover_message(encode_typed_data(full_message=typed_data), signature=signature)
        )
    except Exception as exc:  # eth-keys / eth-account raise several types for bad bytes
        raise PaymentError(f"unreadable signature ({exc}); ask the signer to sign again") from None


def voucher_signer_ok(
    channel_id: bytes | str, renter: str, signer: str, rotated_key: str | None = None
) -> bool:
    """The Escrow's rule: a voucher is signed by the renter, by the rotated session key when
    there is one, or else by the key the channel id binds (keccak256(renter, key) == id)."""
    cid = _bytes32("channel_id", channel_id)
    signer = _address("signer", signer)
    if signer == _address("renter", renter):
        return True
    if rotated_key is not None and int(rotated_key, 16) != 0:
        return signer == _address("rotated_key", rotated_key)
    return channel_id_for(renter, signer) == cid
