# pragma version ~=0.4.3
"""
@title Escrow channel storage
@notice The packed channel words and the rules every entry point shares (create, close with
        refund, voucher signer check). Escrow.vy holds the entry points.
@dev An open channel lives in two storage words (amounts are uint88 there, i.e. at most
     2**88-1 = 3.09e26 base units per channel):
        head   = renter | deposit << 160
        payee  = provider | redeemed << 160 | state << 248 | flags << 252
     The session key is not stored: the channel id is keccak256(abi_encode(renter, session_key)),
     so a voucher's signer is checked against the id (a client knows the id before the
     transaction is mined; session keys are fresh per lease). The key cannot be changed: what
     the provider accepted stays redeemable. Only a close time and a pool link get their own
     slots, on the paths that need them. A refund the token refuses to deliver (a blacklisted
     or paused renter) is owed in `refund_owed` instead of blocking the provider's settle.
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


event ChannelOpened:
    channel_id: indexed(bytes32)
    renter: indexed(address)
    provider: indexed(address)
    token: address
    deposit: uint256
    session_key: address

event RefundOwed:
    channel_id: indexed(bytes32)
    renter: indexed(address)
    amount: uint256


_head: HashMap[bytes32, uint256]
_payee: HashMap[bytes32, uint256]
_close_at: HashMap[bytes32, uint256]
_pool_of: HashMap[bytes32, bytes32]
_grant_of: HashMap[bytes32, bytes32]
refund_owed: public(HashMap[address, uint256])


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
def _create(renter: address, provider: address, deposit: uint256, session_key: address, flags: uint256) -> bytes32:
    assert provider != empty(address), "escrow: provider is the zero address"
    assert session_key != empty(address), "escrow: session key is the zero address"
    assert deposit != 0, "escrow: deposit is zero"
    assert deposit <= MAX_AMOUNT, "escrow: deposit above 2**88-1 base units"
    cid: bytes32 = keccak256(abi_encode(renter, session_key))
    assert self._payee[cid] == 0, "escrow: a channel for this session key exists (OpenChannel signatures are single-use); use a fresh session key"
    self._head[cid] = convert(renter, uint256) | (deposit << 160)
    self._payee[cid] = convert(provider, uint256) | (OPEN << 248) | (flags << 252)
    log ChannelOpened(channel_id=cid, renter=renter, provider=provider, token=escrow_tokens.token, deposit=deposit, session_key=session_key)
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
        elif not escrow_tokens._try_send(self._addr(head), refund):
            renter: address = self._addr(head)
            self.refund_owed[renter] += refund
            log RefundOwed(channel_id=cid, renter=renter, amount=refund)
    return refund


@internal
def _check_voucher(cid: bytes32, amount: uint256, signature: Bytes[65], head: uint256):
    assert amount <= head >> 160 & MAX_AMOUNT, "escrow: voucher amount above the deposit"
    signer: address = escrow_sigs._voucher_signer(cid, amount, signature)
    renter: address = self._addr(head)
    ok: bool = signer == renter
    if not ok:
        ok = keccak256(abi_encode(renter, signer)) == cid
    assert ok, "escrow: voucher not signed by the channel's session key or renter"
