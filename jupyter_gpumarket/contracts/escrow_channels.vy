# pragma version ~=0.4.3
"""
@title Escrow channel storage
@notice The packed channel words and the rules every entry point shares (create, close with
        refund, voucher signer check). Escrow.vy holds the entry points.
@dev An open channel lives in two storage words (amounts are uint88 there, i.e. at most
     2**88-1 = 3.09e26 base units per channel):
        head   = renter | deposit << 160 | token index << 248
        payee  = provider | redeemed << 160 | state << 248 | flags << 252
     The session key is not stored: the channel id is keccak256(abi_encode(renter, session_key)),
     so a voucher's signer is checked against the id (a client knows the id before the
     transaction is mined; session keys are fresh per lease). Only a rotated key, a close time
     and a pool link get their own slots, on the paths that need them.
"""

from . import escrow_pools
from . import escrow_sigs
from . import escrow_tokens

uses: (escrow_tokens, escrow_sigs, escrow_pools)


MAX_AMOUNT: constant(uint256) = 2**88 - 1
ADDR_MASK: constant(uint256) = 2**160 - 1
LOW248: constant(uint256) = 2**248 - 1

# Channel states (payee bits 248..251). CLOSED_PAID: closed after a non-zero payment, so the
# renter may attest once (then ATTESTED).
OPEN: constant(uint256) = 1
CLOSING: constant(uint256) = 2
CLOSED: constant(uint256) = 3
CLOSED_PAID: constant(uint256) = 4
ATTESTED: constant(uint256) = 5
FLAG_POOL: constant(uint256) = 1
FLAG_ROTATED: constant(uint256) = 2


event ChannelOpened:
    channel_id: indexed(bytes32)
    renter: indexed(address)
    provider: indexed(address)
    token: address
    deposit: uint256
    session_key: address


_head: HashMap[bytes32, uint256]
_payee: HashMap[bytes32, uint256]
_close_at: HashMap[bytes32, uint256]
_rotated_key: HashMap[bytes32, address]
_pool_of: HashMap[bytes32, bytes32]
_grant_of: HashMap[bytes32, bytes32]


@internal
@pure
def _addr(word: uint256) -> address:
    return convert(convert(word & ADDR_MASK, uint160), address)


@internal
@pure
def _require_open(payee: uint256):
    state: uint256 = payee >> 248 & 15
    assert state != 0, "escrow: no such channel"
    assert state != CLOSING, "escrow: channel is closing"
    assert state == OPEN, "escrow: channel is closed"


@internal
@pure
def _require_live(payee: uint256):
    state: uint256 = payee >> 248 & 15
    assert state != 0, "escrow: no such channel"
    assert state <= CLOSING, "escrow: channel is closed"


@internal
def _create(renter: address, provider: address, token: address, deposit: uint256, session_key: address, flags: uint256) -> bytes32:
    assert provider != empty(address), "escrow: provider is the zero address"
    assert session_key != empty(address), "escrow: session key is the zero address"
    assert deposit != 0, "escrow: deposit is zero"
    assert deposit <= MAX_AMOUNT, "escrow: deposit above 2**88-1 base units"
    cid: bytes32 = keccak256(abi_encode(renter, session_key))
    assert self._payee[cid] == 0, "escrow: a channel for this session key exists (OpenChannel signatures are single-use); use a fresh session key"
    self._head[cid] = convert(renter, uint256) | (deposit << 160) | (escrow_tokens._token_idx(token) << 248)
    self._payee[cid] = convert(provider, uint256) | (OPEN << 248) | (flags << 252)
    log ChannelOpened(channel_id=cid, renter=renter, provider=provider, token=token, deposit=deposit, session_key=session_key)
    return cid


@internal
def _close(cid: bytes32, head: uint256, payee: uint256, paid: uint256) -> uint256:
    refund: uint256 = (head >> 160 & MAX_AMOUNT) - paid
    state: uint256 = CLOSED
    if paid != 0:
        state = CLOSED_PAID
    flags: uint256 = payee >> 252
    self._payee[cid] = (payee & ADDR_MASK) | (paid << 160) | (state << 248) | (flags << 252)
    if refund != 0:
        if flags & FLAG_POOL != 0:
            escrow_pools._refund(self._pool_of[cid], self._grant_of[cid], refund)
        else:
            escrow_tokens._send(escrow_tokens.tokens[head >> 248], self._addr(head), refund)
    return refund


@internal
def _check_voucher(cid: bytes32, amount: uint256, signature: Bytes[65], head: uint256, payee: uint256):
    assert amount <= head >> 160 & MAX_AMOUNT, "escrow: voucher amount above the deposit"
    signer: address = escrow_sigs._voucher_signer(cid, amount, signature)
    renter: address = self._addr(head)
    ok: bool = signer == renter
    if not ok:
        if payee >> 252 & FLAG_ROTATED != 0:
            ok = signer == self._rotated_key[cid]
        else:
            ok = keccak256(abi_encode(renter, signer)) == cid
    assert ok, "escrow: voucher not signed by the channel's session key or renter"
