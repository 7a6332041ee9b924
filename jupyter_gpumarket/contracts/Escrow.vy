# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title GpuMarket Escrow
@notice One unidirectional payment channel per lease, paid in ERC-20 base units.
        The renter deposits; its session key (or the renter) signs EIP-712
        `Voucher(channelId, cumulativeAmount)` off chain; the provider redeems the highest
        voucher (`redeem`) or redeems and closes in one transaction (`settle`). The renter can
        `requestClose`, wait `close_delay` seconds (the provider may still redeem), then
        `withdraw` the rest. Credit pools let an educator pay for students' channels.
@dev Gas: an open channel lives in two storage words (amounts are uint88 there, i.e. at most
     2**88-1 = 3.09e26 base units per channel):
        head   = renter | deposit << 160 | token index << 248
        payee  = provider | redeemed << 160 | state << 248 | flags << 252
     The session key is not stored: the channel id is keccak256(abi_encode(renter, session_key)),
     so a voucher's signer is checked against the id (a client knows the id before the
     transaction is mined; session keys are fresh per lease). Only a rotated key, a close time
     and a pool link get their own slots, on the paths that need them.
"""

from ethereum.ercs import IERC20
from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator

initializes: eip712_domain_separator

exports: eip712_domain_separator.eip712Domain


interface IERC20Permit:
    def permit(owner: address, spender: address, amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32): nonpayable


VOUCHER_TYPEHASH: constant(bytes32) = keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)")
OPEN_TYPEHASH: constant(bytes32) = keccak256(
    "OpenChannel(address renter,address provider,address token,uint256 deposit,address sessionKey,uint256 relayFee,uint256 nonce,uint256 deadline)"
)
GRANT_TYPEHASH: constant(bytes32) = keccak256(
    "Grant(bytes32 poolId,address student,uint256 cap,uint256 expiry,address provider)"
)

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


struct Channel:
    renter: address
    provider: address
    token: address
    session_key: address
    deposit: uint256
    redeemed: uint256
    close_at: uint256
    state: uint256
    pool_id: bytes32


struct Pool:
    admin: address
    token: address
    balance: uint256


event ChannelOpened:
    channel_id: indexed(bytes32)
    renter: indexed(address)
    provider: indexed(address)
    token: address
    deposit: uint256
    session_key: address

event ToppedUp:
    channel_id: indexed(bytes32)
    amount: uint256
    deposit: uint256

event SessionKeyRotated:
    channel_id: indexed(bytes32)
    session_key: address

event Redeemed:
    channel_id: indexed(bytes32)
    provider: indexed(address)
    cumulative_amount: uint256
    paid: uint256

event CloseRequested:
    channel_id: indexed(bytes32)
    close_at: uint256

event Settled:
    channel_id: indexed(bytes32)
    cumulative_amount: uint256
    refunded: uint256

event Withdrawn:
    channel_id: indexed(bytes32)
    cumulative_amount: uint256
    refunded: uint256

event Attested:
    channel_id: indexed(bytes32)
    renter: indexed(address)
    provider: indexed(address)
    paid: uint256
    score: uint8
    measured_tflops_x100: uint32

event TokenAdded:
    token: indexed(address)
    index: uint256

event PoolCreated:
    pool_id: indexed(bytes32)
    admin: indexed(address)
    token: address
    amount: uint256

event PoolFunded:
    pool_id: indexed(bytes32)
    funder: indexed(address)
    amount: uint256

event PoolWithdrawn:
    pool_id: indexed(bytes32)
    amount: uint256

event PoolChannelOpened:
    channel_id: indexed(bytes32)
    pool_id: indexed(bytes32)
    grant_hash: bytes32
    spent: uint256


close_delay: public(immutable(uint256))
nonces: public(HashMap[address, uint256])
pools: public(HashMap[bytes32, Pool])
pool_count: public(uint256)
grant_spent: public(HashMap[bytes32, uint256])
token_index: public(HashMap[address, uint256])
tokens: public(HashMap[uint256, address])
token_count: public(uint256)

_head: HashMap[bytes32, uint256]
_payee: HashMap[bytes32, uint256]
_close_at: HashMap[bytes32, uint256]
_rotated_key: HashMap[bytes32, address]
_pool_of: HashMap[bytes32, bytes32]
_grant_of: HashMap[bytes32, bytes32]


@deploy
def __init__(close_delay_: uint256):
    assert close_delay_ <= 2**32 - 1, "escrow: close_delay too large"
    close_delay = close_delay_
    eip712_domain_separator.__init__("GpuMarketEscrow", "1")


# ---------------------------------------------------------------- opening

@external
def addToken(token: address) -> uint256:
    """
    @notice Give `token` its small index (done by the first open anyway; idempotent).
    """
    return self._token_idx(token)


@external
def open(provider: address, token: address, deposit: uint256, session_key: address) -> bytes32:
    """
    @notice Open a channel paying `provider`, after `token.approve(escrow, deposit)`.
    """
    cid: bytes32 = self._create(msg.sender, provider, token, deposit, session_key, 0)
    self._pull(token, msg.sender, deposit)
    return cid


@external
def openWithPermit(
    provider: address, token: address, deposit: uint256, session_key: address,
    deadline: uint256, v: uint8, r: bytes32, s: bytes32
) -> bytes32:
    """
    @notice Open in one transaction with an EIP-2612 permit for `deposit`.
    """
    extcall IERC20Permit(token).permit(msg.sender, self, deposit, deadline, v, r, s)
    cid: bytes32 = self._create(msg.sender, provider, token, deposit, session_key, 0)
    self._pull(token, msg.sender, deposit)
    return cid


@external
def openFor(
    renter: address, provider: address, token: address, deposit: uint256, session_key: address,
    relay_fee: uint256, deadline: uint256, open_sig: Bytes[65], v: uint8, r: bytes32, s: bytes32
) -> bytes32:
    """
    @notice Gasless open: anyone relays the renter's signed OpenChannel and gets `relay_fee`
            out of the deposit. `v == 0` skips the permit (the renter approved before).
    """
    self._check_open_sig(renter, provider, token, deposit, session_key, relay_fee, deadline, open_sig)
    if v != 0:
        extcall IERC20Permit(token).permit(renter, self, deposit, deadline, v, r, s)
    cid: bytes32 = self._create(renter, provider, token, deposit - relay_fee, session_key, 0)
    self._pull(token, renter, deposit)
    if relay_fee != 0:
        self._send(token, msg.sender, relay_fee)
    return cid


@external
def topUp(channel_id: bytes32, amount: uint256):
    """
    @notice Add `amount` to an open channel's deposit (renter only, after approve).
    """
    payee: uint256 = self._payee[channel_id]
    self._require_open(payee)
    head: uint256 = self._head[channel_id]
    assert msg.sender == self._addr(head), "escrow: only the channel's renter can top up"
    assert payee >> 252 & FLAG_POOL == 0, "escrow: pool channels are topped up by opening another"
    assert amount != 0, "escrow: amount is zero"
    deposit: uint256 = (head >> 160 & MAX_AMOUNT) + amount
    assert deposit <= MAX_AMOUNT, "escrow: deposit above 2**88-1 base units"
    self._head[channel_id] = (head & ADDR_MASK) | (deposit << 160) | (head >> 248 << 248)
    self._pull(self.tokens[head >> 248], msg.sender, amount)
    log ToppedUp(channel_id=channel_id, amount=amount, deposit=deposit)


@external
def rotateSessionKey(channel_id: bytes32, session_key: address):
    """
    @notice Replace the key that signs vouchers; vouchers of the old key stop being accepted.
    """
    payee: uint256 = self._payee[channel_id]
    self._require_open(payee)
    assert msg.sender == self._addr(self._head[channel_id]), "escrow: only the channel's renter can rotate its key"
    assert session_key != empty(address), "escrow: session key is the zero address"
    self._rotated_key[channel_id] = session_key
    self._payee[channel_id] = payee | (FLAG_ROTATED << 252)
    log SessionKeyRotated(channel_id=channel_id, session_key=session_key)


# ---------------------------------------------------------------- paying and closing

@external
def redeem(channel_id: bytes32, cumulative_amount: uint256, signature: Bytes[65]):
    """
    @notice Provider: collect `cumulative_amount` minus what was already redeemed.
    """
    payee: uint256 = self._payee[channel_id]
    self._require_live(payee)
    provider: address = self._addr(payee)
    redeemed: uint256 = payee >> 160 & MAX_AMOUNT
    assert msg.sender == provider, "escrow: only the channel's provider can redeem"
    assert cumulative_amount > redeemed, "escrow: voucher amount is not above what was already redeemed"
    head: uint256 = self._head[channel_id]
    self._check_voucher(channel_id, cumulative_amount, signature, head, payee)
    self._payee[channel_id] = (payee & ~(MAX_AMOUNT << 160)) | (cumulative_amount << 160)
    self._send(self.tokens[head >> 248], provider, cumulative_amount - redeemed)
    log Redeemed(channel_id=channel_id, provider=provider, cumulative_amount=cumulative_amount, paid=cumulative_amount - redeemed)


@external
def settle(channel_id: bytes32, cumulative_amount: uint256, signature: Bytes[65]):
    """
    @notice Provider: redeem the final voucher, refund the rest to the renter, close.
            A `cumulative_amount` equal to what was already redeemed needs no signature.
    """
    payee: uint256 = self._payee[channel_id]
    self._require_live(payee)
    provider: address = self._addr(payee)
    redeemed: uint256 = payee >> 160 & MAX_AMOUNT
    assert msg.sender == provider, "escrow: only the channel's provider can settle"
    assert cumulative_amount >= redeemed, "escrow: voucher amount is below what was already redeemed"
    head: uint256 = self._head[channel_id]
    if cumulative_amount != redeemed:
        self._check_voucher(channel_id, cumulative_amount, signature, head, payee)
    refund: uint256 = self._close(channel_id, head, payee, cumulative_amount)
    if cumulative_amount != redeemed:
        self._send(self.tokens[head >> 248], provider, cumulative_amount - redeemed)
    log Settled(channel_id=channel_id, cumulative_amount=cumulative_amount, refunded=refund)


@external
def requestClose(channel_id: bytes32):
    """
    @notice Renter: start the challenge period; `withdraw` works `close_delay` seconds later.
    """
    payee: uint256 = self._payee[channel_id]
    self._require_open(payee)
    assert msg.sender == self._addr(self._head[channel_id]), "escrow: only the channel's renter can request close"
    close_at: uint256 = block.timestamp + close_delay
    self._close_at[channel_id] = close_at
    self._payee[channel_id] = (payee & LOW248) | (CLOSING << 248) | (payee >> 252 << 252)
    log CloseRequested(channel_id=channel_id, close_at=close_at)


@external
def withdraw(channel_id: bytes32):
    """
    @notice Renter: after the challenge period, refund what the provider did not redeem.
    """
    payee: uint256 = self._payee[channel_id]
    state: uint256 = payee >> 248 & 15
    assert state != 0, "escrow: no such channel"
    assert state != OPEN, "escrow: call requestClose first, then wait close_delay"
    assert state == CLOSING, "escrow: channel is closed"
    head: uint256 = self._head[channel_id]
    assert msg.sender == self._addr(head), "escrow: only the channel's renter can withdraw"
    assert block.timestamp >= self._close_at[channel_id], "escrow: close delay not over; try again after close_at"
    redeemed: uint256 = payee >> 160 & MAX_AMOUNT
    refund: uint256 = self._close(channel_id, head, payee, redeemed)
    log Withdrawn(channel_id=channel_id, cumulative_amount=redeemed, refunded=refund)


@external
def attest(channel_id: bytes32, score: uint8, measured_tflops_x100: uint32):
    """
    @notice Renter: rate a lease once, after it closed with a non-zero payment (score 0..100).
    """
    payee: uint256 = self._payee[channel_id]
    assert payee >> 248 & 15 == CLOSED_PAID, "escrow: attest needs a closed channel with a payment, once"
    assert msg.sender == self._addr(self._head[channel_id]), "escrow: only the channel's renter can attest"
    assert score <= 100, "escrow: score must be 0..100"
    self._payee[channel_id] = (payee & LOW248) | (ATTESTED << 248) | (payee >> 252 << 252)
    log Attested(channel_id=channel_id, renter=msg.sender, provider=self._addr(payee), paid=payee >> 160 & MAX_AMOUNT, score=score, measured_tflops_x100=measured_tflops_x100)


# ---------------------------------------------------------------- credit pools

@external
def createPool(token: address, amount: uint256) -> bytes32:
    """
    @notice Create a credit pool administered by the caller, funded with `amount` (approve first).
    """
    self._token_idx(token)
    pool_id: bytes32 = keccak256(abi_encode(self, msg.sender, self.pool_count))
    self.pool_count += 1
    self.pools[pool_id] = Pool(admin=msg.sender, token=token, balance=amount)
    if amount != 0:
        self._pull(token, msg.sender, amount)
    log PoolCreated(pool_id=pool_id, admin=msg.sender, token=token, amount=amount)
    return pool_id


@external
def fundPool(pool_id: bytes32, amount: uint256):
    """
    @notice Add `amount` to a pool (anyone, after approve).
    """
    token: address = self.pools[pool_id].token
    assert token != empty(address), "escrow: no such pool"
    self.pools[pool_id].balance += amount
    self._pull(token, msg.sender, amount)
    log PoolFunded(pool_id=pool_id, funder=msg.sender, amount=amount)


@external
def withdrawPool(pool_id: bytes32, amount: uint256):
    """
    @notice Pool admin: take back `amount` of the pool's free balance.
    """
    pool: Pool = self.pools[pool_id]
    assert pool.admin != empty(address), "escrow: no such pool"
    assert msg.sender == pool.admin, "escrow: only the pool admin can withdraw"
    assert amount <= pool.balance, "escrow: amount above the pool's free balance"
    self.pools[pool_id].balance = pool.balance - amount
    self._send(pool.token, msg.sender, amount)
    log PoolWithdrawn(pool_id=pool_id, amount=amount)


@external
def openFromPool(
    pool_id: bytes32, student: address, cap: uint256, expiry: uint256, grant_provider: address,
    admin_sig: Bytes[65], provider: address, deposit: uint256, session_key: address
) -> bytes32:
    """
    @notice Student: open a channel whose deposit comes from a pool, under the admin's Grant.
    """
    assert msg.sender == student, "escrow: grant is for another student"
    return self._open_from_pool(pool_id, student, cap, expiry, grant_provider, admin_sig, provider, deposit, session_key, 0)


@external
def openFromPoolFor(
    pool_id: bytes32, student: address, cap: uint256, expiry: uint256, grant_provider: address,
    admin_sig: Bytes[65], provider: address, deposit: uint256, session_key: address,
    relay_fee: uint256, deadline: uint256, open_sig: Bytes[65]
) -> bytes32:
    """
    @notice Gasless openFromPool: the student signed OpenChannel (token = the pool's token);
            the relayer gets `relay_fee` out of the deposit.
    """
    token: address = self.pools[pool_id].token
    self._check_open_sig(student, provider, token, deposit, session_key, relay_fee, deadline, open_sig)
    return self._open_from_pool(pool_id, student, cap, expiry, grant_provider, admin_sig, provider, deposit, session_key, relay_fee)


# ---------------------------------------------------------------- views

@external
@view
def channels(channel_id: bytes32) -> Channel:
    """
    @notice A channel. `session_key` is zero until rotated: the original key is bound in the
            channel id (keccak256(abi_encode(renter, session_key))) and in ChannelOpened.
    """
    head: uint256 = self._head[channel_id]
    payee: uint256 = self._payee[channel_id]
    return Channel(
        renter=self._addr(head),
        provider=self._addr(payee),
        token=self.tokens[head >> 248],
        session_key=self._rotated_key[channel_id],
        deposit=head >> 160 & MAX_AMOUNT,
        redeemed=payee >> 160 & MAX_AMOUNT,
        close_at=self._close_at[channel_id],
        state=payee >> 248 & 15,
        pool_id=self._pool_of[channel_id],
    )


@external
@view
def domain_separator() -> bytes32:
    return eip712_domain_separator._domain_separator_v4()


@external
@view
def voucher_digest(channel_id: bytes32, cumulative_amount: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(keccak256(abi_encode(VOUCHER_TYPEHASH, channel_id, cumulative_amount)))


# ---------------------------------------------------------------- internals

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
def _token_idx(token: address) -> uint256:
    idx: uint256 = self.token_index[token]
    if idx == 0:
        assert token != empty(address), "escrow: token is the zero address"
        idx = self.token_count + 1
        assert idx <= 255, "escrow: too many tokens"
        self.token_count = idx
        self.token_index[token] = idx
        self.tokens[idx] = token
        log TokenAdded(token=token, index=idx)
    return idx


@internal
def _create(renter: address, provider: address, token: address, deposit: uint256, session_key: address, flags: uint256) -> bytes32:
    assert provider != empty(address), "escrow: provider is the zero address"
    assert session_key != empty(address), "escrow: session key is the zero address"
    assert deposit != 0, "escrow: deposit is zero"
    assert deposit <= MAX_AMOUNT, "escrow: deposit above 2**88-1 base units"
    cid: bytes32 = keccak256(abi_encode(renter, session_key))
    assert self._payee[cid] == 0, "escrow: channel for this session key exists; use a fresh session key"
    self._head[cid] = convert(renter, uint256) | (deposit << 160) | (self._token_idx(token) << 248)
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
            self.pools[self._pool_of[cid]].balance += refund
            self.grant_spent[self._grant_of[cid]] -= refund
        else:
            self._send(self.tokens[head >> 248], self._addr(head), refund)
    return refund


@internal
def _check_voucher(cid: bytes32, amount: uint256, signature: Bytes[65], head: uint256, payee: uint256):
    assert amount <= head >> 160 & MAX_AMOUNT, "escrow: voucher amount above the deposit"
    digest: bytes32 = eip712_domain_separator._hash_typed_data_v4(keccak256(abi_encode(VOUCHER_TYPEHASH, cid, amount)))
    signer: address = ecdsa._recover_sig(digest, signature)
    renter: address = self._addr(head)
    ok: bool = signer == renter
    if not ok:
        if payee >> 252 & FLAG_ROTATED != 0:
            ok = signer == self._rotated_key[cid]
        else:
            ok = keccak256(abi_encode(renter, signer)) == cid
    assert ok, "escrow: voucher not signed by the channel's session key or renter"


@internal
def _check_open_sig(
    renter: address, provider: address, token: address, deposit: uint256, session_key: address,
    relay_fee: uint256, deadline: uint256, open_sig: Bytes[65]
):
    assert block.timestamp <= deadline, "escrow: OpenChannel signature expired (deadline passed)"
    assert relay_fee < deposit, "escrow: relay fee must be below the deposit"
    nonce: uint256 = self.nonces[renter]
    self.nonces[renter] = nonce + 1
    digest: bytes32 = eip712_domain_separator._hash_typed_data_v4(
        keccak256(abi_encode(OPEN_TYPEHASH, renter, provider, token, deposit, session_key, relay_fee, nonce, deadline))
    )
    assert ecdsa._recover_sig(digest, open_sig) == renter, "escrow: OpenChannel not signed by the renter, or its nonce was already used"


@internal
def _open_from_pool(
    pool_id: bytes32, student: address, cap: uint256, expiry: uint256, grant_provider: address,
    admin_sig: Bytes[65], provider: address, deposit: uint256, session_key: address, relay_fee: uint256
) -> bytes32:
    pool: Pool = self.pools[pool_id]
    assert pool.admin != empty(address), "escrow: no such pool"
    assert block.timestamp <= expiry, "escrow: grant expired"
    assert grant_provider == empty(address) or grant_provider == provider, "escrow: grant is for another provider"
    grant: bytes32 = keccak256(abi_encode(GRANT_TYPEHASH, pool_id, student, cap, expiry, grant_provider))
    signer: address = ecdsa._recover_sig(eip712_domain_separator._hash_typed_data_v4(grant), admin_sig)
    assert signer == pool.admin, "escrow: grant not signed by the pool admin"
    spent: uint256 = self.grant_spent[grant] + deposit
    assert spent <= cap, "escrow: grant cap exceeded"
    assert deposit <= pool.balance, "escrow: pool balance too low; ask the admin to fund it"
    self.grant_spent[grant] = spent
    self.pools[pool_id].balance = pool.balance - deposit
    cid: bytes32 = self._create(student, provider, pool.token, deposit - relay_fee, session_key, FLAG_POOL)
    self._pool_of[cid] = pool_id
    self._grant_of[cid] = grant
    if relay_fee != 0:
        self._send(pool.token, msg.sender, relay_fee)
    log PoolChannelOpened(channel_id=cid, pool_id=pool_id, grant_hash=grant, spent=spent)
    return cid


@internal
def _pull(token: address, owner: address, amount: uint256):
    assert extcall IERC20(token).transferFrom(owner, self, amount, default_return_value=True), "escrow: token transferFrom failed"


@internal
def _send(token: address, to: address, amount: uint256):
    assert extcall IERC20(token).transfer(to, amount, default_return_value=True), "escrow: token transfer failed"
