# pragma version ~=0.4.3
"""
@title Escrow EIP-712 messages
@notice Digests of Voucher, OpenChannel and Grant under the domain
        {name: "GpuMarketEscrow", version: "1", chainId, verifyingContract}.
@dev OpenChannel's `nonce` is the session key as a number (uint160(sessionKey)). A session key
     opens at most one channel ever (the channel id is keccak256(abi_encode(renter,
     session_key)) and a closed channel's word never returns to zero), so each OpenChannel
     signature is single-use without a per-renter counter: that counter cost a relayed open
     22,100 gas on a renter's first lease and 5,000 on every later one.
     OpenChannel's `poolId` says who pays: zero for the renter's wallet (openFor), the pool's
     id for openFromPoolFor, so a relayer cannot turn one funding source into the other.
     Its `relayFee` goes to the channel's provider (never to the transaction's sender) and is
     at most a tenth of the deposit (MAX_RELAY_FEE_DIVISOR).
"""

from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator

uses: eip712_domain_separator


VOUCHER_TYPEHASH: constant(bytes32) = keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)")
OPEN_TYPEHASH: constant(bytes32) = keccak256(
    "OpenChannel(address renter,address provider,address token,uint256 deposit,address sessionKey,uint256 relayFee,bytes32 poolId,uint256 nonce,uint256 deadline)"
)
GRANT_TYPEHASH: constant(bytes32) = keccak256(
    "Grant(bytes32 poolId,address student,uint256 cap,uint256 expiry,address provider)"
)
# A grant for a student who has no wallet yet: `claimKey` is a one-time key whose private half
# travels in the code; the first wallet it signs a Claim for is bound to the grant.
CLAIMABLE_GRANT_TYPEHASH: constant(bytes32) = keccak256(
    "ClaimableGrant(bytes32 poolId,address claimKey,uint256 cap,uint256 expiry,address provider)"
)
CLAIM_TYPEHASH: constant(bytes32) = keccak256("Claim(bytes32 grant,address student)")
# relay_fee <= deposit // MAX_RELAY_FEE_DIVISOR: a relayed opening pays at most 10 % as a fee
MAX_RELAY_FEE_DIVISOR: constant(uint256) = 10


@internal
@view
def _recover(digest: bytes32, signature: Bytes[65]) -> address:
    # 65 bytes (r, s, v) only: snekmate also takes 64-byte EIP-2098 signatures, which the
    # off-chain checks refuse; every signature entry point goes through here
    assert len(signature) == 65, "escrow: signature is not 65 bytes (r, s, v)"
    return ecdsa._recover_sig(digest, signature)


@internal
@view
def _voucher_digest(channel_id: bytes32, amount: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(keccak256(abi_encode(VOUCHER_TYPEHASH, channel_id, amount)))


@internal
@view
def _voucher_signer(channel_id: bytes32, amount: uint256, signature: Bytes[65]) -> address:
    return self._recover(self._voucher_digest(channel_id, amount), signature)


@internal
@view
def _check_open_sig(
    renter: address, provider: address, token: address, deposit: uint256, session_key: address,
    relay_fee: uint256, pool_id: bytes32, deadline: uint256, open_sig: Bytes[65]
):
    # ecdsa returns the zero address for a malformed signature: never let it "match"
    assert renter != empty(address), "escrow: renter is the zero address"
    assert block.timestamp <= deadline, "escrow: OpenChannel signature expired (deadline passed)"
    assert relay_fee <= deposit // MAX_RELAY_FEE_DIVISOR, "escrow: relay fee above a tenth of the deposit"
    nonce: uint256 = convert(convert(session_key, uint160), uint256)
    digest: bytes32 = eip712_domain_separator._hash_typed_data_v4(
        keccak256(abi_encode(OPEN_TYPEHASH, renter, provider, token, deposit, session_key, relay_fee, pool_id, nonce, deadline))
    )
    assert self._recover(digest, open_sig) == renter, "escrow: OpenChannel not signed by the renter (its nonce must be uint160(sessionKey))"


@internal
@view
def _grant(
    pool_id: bytes32, student: address, cap: uint256, expiry: uint256, provider: address, admin_sig: Bytes[65]
) -> (bytes32, address):
    """
    @return (the Grant's struct hash, its signer)
    """
    grant: bytes32 = keccak256(abi_encode(GRANT_TYPEHASH, pool_id, student, cap, expiry, provider))
    return grant, self._recover(eip712_domain_separator._hash_typed_data_v4(grant), admin_sig)


@internal
@view
def _claimable_grant(
    pool_id: bytes32, claim_key: address, cap: uint256, expiry: uint256, provider: address, admin_sig: Bytes[65]
) -> (bytes32, address):
    """
    @return (the ClaimableGrant's struct hash, its signer)
    """
    grant: bytes32 = keccak256(abi_encode(CLAIMABLE_GRANT_TYPEHASH, pool_id, claim_key, cap, expiry, provider))
    return grant, self._recover(eip712_domain_separator._hash_typed_data_v4(grant), admin_sig)


@internal
@view
def _claim_signer(grant: bytes32, student: address, claim_sig: Bytes[65]) -> address:
    digest: bytes32 = eip712_domain_separator._hash_typed_data_v4(keccak256(abi_encode(CLAIM_TYPEHASH, grant, student)))
    return self._recover(digest, claim_sig)
