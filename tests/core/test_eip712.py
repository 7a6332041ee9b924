"""core.eip712: typed-data builders, checked against the EIP-712 spec's published vector."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.exceptions import PaymentError

ESCROW = "0x" + "cc" * 20
A, B = "0x" + "aa" * 20, "0x" + "bb" * 20
COW = bytes.fromhex("c85ef7d79691fe79573b1a7064c19c1a9819ebdbd1faaab1a8ec92344438aaf4")

# EIP-712's own example (eips.ethereum.org/EIPS/eip-712, "Mail"), signed by keccak("cow").
MAIL = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}


def test_signer_matches_the_eip712_spec_vector():
    sig = eip712.sign_typed_data(COW, MAIL)
    digest = _hash_eip191_message(encode_typed_data(full_message=MAIL))
    assert digest.hex() == "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    assert sig[:32].hex() == "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
    assert sig[32:64].hex() == "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
    assert sig[64] == 28


def _recover(typed, sig):
    return Account.recover_message(encode_typed_data(full_message=typed), signature=sig)


def test_voucher_round_trip_and_domain_binding():
    key = Account.create()
    domain = eip712.Domain(chain_id=31337, verifying_contract=ESCROW)
    cid = eip712.channel_id_for(A, key.address)
    typed = eip712.voucher(domain, cid, 10)
    sig = eip712.sign_typed_data(key.key, typed)
    assert _recover(typed, sig) == key.address
    other_chain = eip712.voucher(eip712.Domain(chain_id=1, verifying_contract=ESCROW), cid, 10)
    assert _recover(other_chain, sig) != key.address
    assert typed["domain"]["name"] == "GpuMarketEscrow"
    assert typed["domain"]["version"] == "1"


def test_open_channel_and_grant_types():
    domain = eip712.Domain(chain_id=31337, verifying_contract=ESCROW)
    typed = eip712.open_channel(
        domain,
        renter=A,
        provider=B,
        token=ESCROW,
        deposit=10,
        session_key=B,
        relay_fee=1,
        deadline=99,
    )
    assert typed["message"]["nonce"] == int(B, 16) == eip712.open_channel_nonce(B)
    assert [f["name"] for f in typed["types"]["OpenChannel"]] == [
        "renter",
        "provider",
        "token",
        "deposit",
        "sessionKey",
        "relayFee",
        "poolId",
        "nonce",
        "deadline",
    ]
    g = eip712.grant(domain, pool_id=b"\x01" * 32, student=A, cap=5, expiry=9, provider=B)
    assert g["primaryType"] == "Grant"
    assert g["message"]["cap"] == 5


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda d: eip712.voucher(d, b"\x00" * 31, 1), "channel_id"),
        (lambda d: eip712.voucher(d, b"\x00" * 32, -1), "cumulative_amount"),
        (
            lambda d: eip712.open_channel(
                d,
                renter="nope",
                provider=B,
                token=B,
                deposit=2,
                session_key=B,
                relay_fee=1,
                deadline=1,
            ),
            "renter",
        ),
        (
            lambda d: eip712.open_channel(
                d,
                renter=A,
                provider=B,
                token=B,
                deposit=2,
                session_key=B,
                relay_fee=2,
                deadline=1,
            ),
            "relay_fee",
        ),
    ],
)
def test_bad_fields_are_named(call, field):
    with pytest.raises(PaymentError, match=field):
        call(eip712.Domain(chain_id=1, verifying_contract=ESCROW))


def test_channel_id_is_deterministic_and_key_specific():
    assert eip712.channel_id_for(A, B) == eip712.channel_id_for(A.upper().replace("0X", "0x"), B)
    assert eip712.channel_id_for(A, B) != eip712.channel_id_for(B, A)


def test_recover_and_voucher_signer_rule():
    session, renter, other = Account.create(), Account.create(), Account.create()
    domain = eip712.Domain(chain_id=31337, verifying_contract=ESCROW)
    cid = eip712.channel_id_for(renter.address, session.address)
    signer = eip712.recover_signer(
        eip712.voucher(domain, cid, 5),
        eip712.sign_typed_data(session.key, eip712.voucher(domain, cid, 5)),
    )
    assert signer == session.address
    assert eip712.voucher_signer_ok(cid, renter.address, signer)
    assert eip712.voucher_signer_ok(cid, renter.address, renter.address)
    assert not eip712.voucher_signer_ok(cid, renter.address, other.address)
    # the session key of another channel of the same renter
    assert not eip712.voucher_signer_ok(
        eip712.channel_id_for(renter.address, other.address), renter.address, signer
    )
    with pytest.raises(PaymentError, match="unreadable signature"):
        eip712.recover_signer(eip712.voucher(domain, cid, 5), b"\x00" * 10)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda r, s, v: (r, eip712.SECP256K1_N - s, 55 - v), "upper half"),  # mirrored high s
        (lambda r, s, v: (r, s, v - 27), "v must be 27 or 28"),
        (lambda r, s, v: (r, s, v + 4), "v must be 27 or 28"),
        (lambda r, s, v: (0, s, v), "r is out of range"),
        (lambda r, s, v: (eip712.SECP256K1_N, s, v), "r is out of range"),
        (lambda r, s, v: (r, 0, v), "s is zero"),
    ],
)
def test_recover_refuses_what_the_escrow_ecdsa_refuses(mutate, why):
    """snekmate's ECDSA + ecrecover take low s, v 27/28, 0 < r < n only; eth-account alone
    would recover high-s and v 0/1 signatures (the renter then ran for free)."""
    session = Account.create()
    typed = eip712.voucher(eip712.Domain(31337, ESCROW), b"\x01" * 32, 5)
    sig = eip712.sign_typed_data(session.key, typed)
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    r, s, v = mutate(r, s, v)
    bad = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])
    with pytest.raises(PaymentError, match=why):
        eip712.recover_signer(typed, bad)
    for wrong_length in (sig[:64], sig + b"\x00", b""):
        with pytest.raises(PaymentError, match="65 bytes"):
            eip712.recover_signer(typed, wrong_length)
    assert eip712.recover_signer(typed, sig) == session.address
