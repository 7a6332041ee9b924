# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title GpuMarket Escrow
@notice One unidirectional payment channel per lease, paid in ERC-20 base units.
        The renter deposits; its session key (or the renter) signs EIP-712
        `Voucher(channelId, cumulativeAmount)` off chain; the provider redeems the highest
        voucher (`redeem`) or redeems and closes in one transaction (`settle`). The renter can
        `requestClose`, wait `close_delay` seconds (the provider may still redeem), then
        `withdraw` the rest. Credit pools (escrow_pools.vy) pay for students' channels.
        One token per deployment (`token()`, set in the constructor): every `token` argument
        must be it.
@dev Channel storage and its packing: escrow_channels.vy (two words per open channel).
"""

from snekmate.utils import eip712_domain_separator

from . import escrow_channels as ch
from . import escrow_pools
from . import escrow_sigs
from . import escrow_tokens

initializes: eip712_domain_separator
initializes: escrow_tokens
initializes: escrow_sigs[eip712_domain_separator := eip712_domain_separator]
initializes: escrow_pools[escrow_tokens := escrow_tokens]
initializes: ch[
    escrow_tokens := escrow_tokens,
    escrow_sigs := escrow_sigs,
    escrow_pools := escrow_pools,
]

exports: (
    eip712_domain_separator.eip712Domain,
    escrow_tokens.token,
    ch.refund_owed,
    escrow_pools.pools,
    escrow_pools.pool_count,
    escrow_pools.grant_spent,
    escrow_pools.createPool,
    escrow_pools.fundPool,
    escrow_pools.withdrawPool,
    escrow_pools.grant_holder,
    escrow_pools.grant_revoked,
    escrow_pools.revokeGrant,
    escrow_pools.setPoolTerms,
)


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


event ToppedUp:
    channel_id: indexed(bytes32)
    amount: uint256
    deposit: uint256

event RefundClaimed:
    renter: indexed(address)
    to: address
    amount: uint256

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

event PoolChannelOpened:
    channel_id: indexed(bytes32)
    pool_id: indexed(bytes32)
    grant_hash: bytes32
    spent: uint256


# attest: a lease's measured TFLOPS (x100) above this is not a measurement (20,000 TFLOPS)
MAX_TFLOPS_X100: constant(uint32) = 2_000_000

close_delay: public(immutable(uint256))

@deploy
def __init__(close_delay_: uint256, token_: address):
    assert close_delay_ <= 2**32 - 1, "escrow: close_delay too large"
    close_delay = close_delay_
    eip712_domain_separator.__init__("GpuMarketEscrow", "1")
    escrow_tokens.__init__(token_)


# ---------------------------------------------------------------- opening

@external
def open(provider: address, token: address, deposit: uint256, session_key: address) -> bytes32:
    """
    @notice Open a channel paying `provider`, after `token.approve(escrow, deposit)`.
    """
    escrow_tokens._require_token(token)
    cid: bytes32 = ch._create(msg.sender, provider, deposit, session_key, 0)
    escrow_tokens._pull(msg.sender, deposit)
    return cid


@external
def openWithPermit(
    provider: address, token: address, deposit: uint256, session_key: address,
    deadline: uint256, v: uint8, r: bytes32, s: bytes32
) -> bytes32:
    """
    @notice Open in one transaction with an EIP-2612 permit for `deposit` (a permit someone
            already submitted is fine while the allowance covers the deposit).
    """
    escrow_tokens._require_token(token)
    escrow_tokens._try_permit(msg.sender, deposit, deadline, v, r, s)
    cid: bytes32 = ch._create(msg.sender, provider, deposit, session_key, 0)
    escrow_tokens._pull(msg.sender, deposit)
    return cid


@external
def openFor(
    renter: address, provider: address, token: address, deposit: uint256, session_key: address,
    relay_fee: uint256, deadline: uint256, open_sig: Bytes[65], v: uint8, r: bytes32, s: bytes32
) -> bytes32:
    """
    @notice Gasless open: anyone relays the renter's signed OpenChannel (poolId zero: the
            renter's wallet pays); `relay_fee` (at most a tenth of `deposit`) goes out of the
            deposit to the channel's provider, whoever sends the transaction. `v == 0` skips
            the permit (the renter approved before).
    """
    escrow_tokens._require_token(token)
    escrow_sigs._check_open_sig(renter, provider, token, deposit, session_key, relay_fee, empty(bytes32), deadline, open_sig)
    if v != 0:
        escrow_tokens._try_permit(renter, deposit, deadline, v, r, s)
    cid: bytes32 = ch._create(renter, provider, deposit - relay_fee, session_key, 0)
    escrow_tokens._pull(renter, deposit)
    if relay_fee != 0:
        escrow_tokens._send(provider, relay_fee)
    return cid


@external
def openFromPool(
    pool_id: bytes32, student: address, cap: uint256, expiry: uint256, grant_provider: address,
    admin_sig: Bytes[65], provider: address, deposit: uint256, session_key: address
) -> bytes32:
    """
    @notice Student: open a channel whose deposit comes from a pool, under the admin's Grant.
    """
    assert msg.sender == student, "escrow: grant is for another student"
    grant: bytes32 = empty(bytes32)
    signer: address = empty(address)
    grant, signer = escrow_sigs._grant(pool_id, student, cap, expiry, grant_provider, admin_sig)
    return self._open_from_pool(pool_id, grant, signer, cap, expiry, grant_provider, student, provider, deposit, session_key, 0)


@external
def openFromPoolFor(
    pool_id: bytes32, student: address, cap: uint256, expiry: uint256, grant_provider: address,
    admin_sig: Bytes[65], provider: address, deposit: uint256, session_key: address,
    relay_fee: uint256, deadline: uint256, open_sig: Bytes[65]
) -> bytes32:
    """
    @notice Gasless openFromPool: the student signed OpenChannel (poolId = `pool_id`, token =
            the escrow's); `relay_fee` (at most a tenth of `deposit`) goes out of the deposit
            to the channel's provider, whoever sends the transaction.
    """
    escrow_sigs._check_open_sig(student, provider, escrow_tokens.token, deposit, session_key, relay_fee, pool_id, deadline, open_sig)
    grant: bytes32 = empty(bytes32)
    signer: address = empty(address)
    grant, signer = escrow_sigs._grant(pool_id, student, cap, expiry, grant_provider, admin_sig)
    return self._open_from_pool(pool_id, grant, signer, cap, expiry, grant_provider, student, provider, deposit, session_key, relay_fee)


@external
def claimGrant(
    pool_id: bytes32, claim_key: address, cap: uint256, expiry: uint256, grant_provider: address,
    admin_sig: Bytes[65], student: address, claim_sig: Bytes[65]
) -> bytes32:
    """
    @notice Bind `student` to a ClaimableGrant (anyone relays it): `claim_sig` is the code's
            claim key signing EIP-712 `Claim(grant, student)`. The first claim binds; the same
            claim again is a no-op; a claim for another wallet reverts.
    @return the grant's struct hash
    """
    grant: bytes32 = self._claimable(pool_id, claim_key, cap, expiry, grant_provider, admin_sig)
    escrow_pools._bind(pool_id, grant, student, escrow_sigs._claim_signer(grant, student, claim_sig), claim_key)
    return grant


@external
def openFromClaimFor(
    pool_id: bytes32, claim_key: address, cap: uint256, expiry: uint256, grant_provider: address,
    admin_sig: Bytes[65], claim_sig: Bytes[65], student: address, provider: address,
    deposit: uint256, session_key: address, relay_fee: uint256, deadline: uint256, open_sig: Bytes[65]
) -> bytes32:
    """
    @notice Gasless opening under a ClaimableGrant: binds `student` on the first use (as
            claimGrant; `claim_sig` is ignored once `student` is bound), then opens as
            openFromPoolFor with `student` as the renter.
    """
    escrow_sigs._check_open_sig(student, provider, escrow_tokens.token, deposit, session_key, relay_fee, pool_id, deadline, open_sig)
    grant: bytes32 = self._claimable(pool_id, claim_key, cap, expiry, grant_provider, admin_sig)
    signer: address = empty(address)
    if escrow_pools.grant_holder[grant] == empty(address):
        signer = escrow_sigs._claim_signer(grant, student, claim_sig)
    escrow_pools._bind(pool_id, grant, student, signer, claim_key)
    return self._open_from_pool(pool_id, grant, escrow_pools._pools[pool_id].admin, cap, expiry, grant_provider, student, provider, deposit, session_key, relay_fee)


@external
def topUp(channel_id: bytes32, amount: uint256):
    """
    @notice Add `amount` to an open channel's deposit (renter only, after approve).
    """
    payee: uint256 = ch._payee[channel_id]
    ch._require_open(payee)
    head: uint256 = ch._head[channel_id]
    assert msg.sender == ch._addr(head), "escrow: only the channel's renter can top up"
    assert payee >> 252 & ch.FLAG_POOL == 0, "escrow: pool channels are topped up by opening another"
    assert amount != 0, "escrow: amount is zero"
    deposit: uint256 = (head >> 160 & ch.MAX_AMOUNT) + amount
    assert deposit <= ch.MAX_AMOUNT, "escrow: deposit above 2**88-1 base units"
    ch._head[channel_id] = (head & ch.ADDR_MASK) | (deposit << 160)
    escrow_tokens._pull(msg.sender, amount)
    log ToppedUp(channel_id=channel_id, amount=amount, deposit=deposit)


# ---------------------------------------------------------------- paying and closing

@external
def redeem(channel_id: bytes32, cumulative_amount: uint256, signature: Bytes[65]):
    """
    @notice Provider: collect `cumulative_amount` minus what was already redeemed.
    """
    payee: uint256 = ch._payee[channel_id]
    ch._require_live(payee)
    provider: address = ch._addr(payee)
    redeemed: uint256 = payee >> 160 & ch.MAX_AMOUNT
    assert msg.sender == provider, "escrow: only the channel's provider can redeem"
    assert cumulative_amount > redeemed, "escrow: voucher amount is not above what was already redeemed"
    head: uint256 = ch._head[channel_id]
    ch._check_voucher(channel_id, cumulative_amount, signature, head)
    ch._payee[channel_id] = (payee & ~(ch.MAX_AMOUNT << 160)) | (cumulative_amount << 160)
    escrow_tokens._send(provider, cumulative_amount - redeemed)
    log Redeemed(channel_id=channel_id, provider=provider, cumulative_amount=cumulative_amount, paid=cumulative_amount - redeemed)


@external
def settle(channel_id: bytes32, cumulative_amount: uint256, signature: Bytes[65]):
    """
    @notice Provider: redeem the final voucher, refund the rest to the renter, close.
            A `cumulative_amount` equal to what was already redeemed needs no signature. A
            refund the token will not deliver is owed to the renter (`claimRefund`).
    """
    payee: uint256 = ch._payee[channel_id]
    ch._require_live(payee)
    provider: address = ch._addr(payee)
    redeemed: uint256 = payee >> 160 & ch.MAX_AMOUNT
    assert msg.sender == provider, "escrow: only the channel's provider can settle"
    assert cumulative_amount >= redeemed, "escrow: voucher amount is below what was already redeemed"
    head: uint256 = ch._head[channel_id]
    if cumulative_amount != redeemed:
        ch._check_voucher(channel_id, cumulative_amount, signature, head)
    refund: uint256 = ch._close(channel_id, head, payee, cumulative_amount)
    if cumulative_amount != redeemed:
        escrow_tokens._send(provider, cumulative_amount - redeemed)
    log Settled(channel_id=channel_id, cumulative_amount=cumulative_amount, refunded=refund)


@external
def requestClose(channel_id: bytes32):
    """
    @notice Renter: start the challenge period; `withdraw` works `close_delay` seconds later.
    """
    payee: uint256 = ch._payee[channel_id]
    ch._require_open(payee)
    assert msg.sender == ch._addr(ch._head[channel_id]), "escrow: only the channel's renter can request close"
    close_at: uint256 = block.timestamp + close_delay
    ch._close_at[channel_id] = close_at
    ch._payee[channel_id] = (payee & ch.LOW248) | (ch.CLOSING << 248) | (payee >> 252 << 252)
    log CloseRequested(channel_id=channel_id, close_at=close_at)


@external
def withdraw(channel_id: bytes32):
    """
    @notice Renter: after the challenge period, refund what the provider did not redeem.
    """
    payee: uint256 = ch._payee[channel_id]
    state: uint256 = payee >> 248 & 15
    assert state != 0, "escrow: no such channel"
    assert state != ch.OPEN, "escrow: call requestClose first, then wait close_delay"
    assert state == ch.CLOSING, "escrow: channel is closed"
    head: uint256 = ch._head[channel_id]
    assert msg.sender == ch._addr(head), "escrow: only the channel's renter can withdraw"
    assert block.timestamp >= ch._close_at[channel_id], "escrow: close delay not over; try again after close_at"
    redeemed: uint256 = payee >> 160 & ch.MAX_AMOUNT
    refund: uint256 = ch._close(channel_id, head, payee, redeemed)
    log Withdrawn(channel_id=channel_id, cumulative_amount=redeemed, refunded=refund)


@external
def claimRefund(to: address):
    """
    @notice Renter: collect refunds the token refused to deliver at settle/withdraw
            (`refund_owed(renter)`), sent to `to` (e.g. another wallet of yours).
    """
    amount: uint256 = ch.refund_owed[msg.sender]
    assert amount != 0, "escrow: no refund owed to this address"
    ch.refund_owed[msg.sender] = 0
    escrow_tokens._send(to, amount)
    log RefundClaimed(renter=msg.sender, to=to, amount=amount)


@external
def attest(channel_id: bytes32, score: uint8, measured_tflops_x100: uint32):
    """
    @notice Renter: rate a lease once, after it closed with a non-zero payment (score 0..100).
            A provider cannot rate its own channel; reputation should still weigh each
            attestation by the `paid` it carries (the money that flowed to the provider).
    """
    payee: uint256 = ch._payee[channel_id]
    assert payee >> 248 & 15 == ch.CLOSED_PAID, "escrow: attest needs a closed channel with a payment, once"
    renter: address = ch._addr(ch._head[channel_id])
    assert msg.sender == renter, "escrow: only the channel's renter can attest"
    assert renter != ch._addr(payee), "escrow: a provider cannot attest its own channel"
    assert score <= 100, "escrow: score must be 0..100"
    assert measured_tflops_x100 <= MAX_TFLOPS_X100, "escrow: measured_tflops_x100 above 20,000 TFLOPS"
    ch._payee[channel_id] = (payee & ch.LOW248) | (ch.ATTESTED << 248) | (payee >> 252 << 252)
    log Attested(channel_id=channel_id, renter=msg.sender, provider=ch._addr(payee), paid=payee >> 160 & ch.MAX_AMOUNT, score=score, measured_tflops_x100=measured_tflops_x100)


# ---------------------------------------------------------------- views

@external
@view
def channels(channel_id: bytes32) -> Channel:
    """
    @notice A channel. `session_key` is always zero (kept for readers of this struct): the
            key is bound in the channel id (keccak256(abi_encode(renter, session_key))) and in
            ChannelOpened, and it cannot change. `token` is the escrow's token().
    """
    head: uint256 = ch._head[channel_id]
    payee: uint256 = ch._payee[channel_id]
    return Channel(
        renter=ch._addr(head),
        provider=ch._addr(payee),
        token=escrow_tokens.token,
        session_key=empty(address),
        deposit=head >> 160 & ch.MAX_AMOUNT,
        redeemed=payee >> 160 & ch.MAX_AMOUNT,
        close_at=ch._close_at[channel_id],
        state=payee >> 248 & 15,
        pool_id=ch._pool_of[channel_id],
    )


@external
@view
def channel_revoked(channel_id: bytes32) -> bool:
    """
    @notice Whether the grant that paid this pool channel was revoked (False for others).
    """
    return escrow_pools.grant_revoked[ch._pool_of[channel_id]][ch._grant_of[channel_id]]


@external
@view
def domain_separator() -> bytes32:
    return eip712_domain_separator._domain_separator_v4()


@external
@view
def voucher_digest(channel_id: bytes32, cumulative_amount: uint256) -> bytes32:
    return escrow_sigs._voucher_digest(channel_id, cumulative_amount)


@internal
@view
def _claimable(
    pool_id: bytes32, claim_key: address, cap: uint256, expiry: uint256, grant_provider: address, admin_sig: Bytes[65]
) -> bytes32:
    """
    @notice A ClaimableGrant's hash, after checking the pool admin signed it.
    """
    admin: address = escrow_pools._pools[pool_id].admin
    assert admin != empty(address), "escrow: no such pool"
    assert claim_key != empty(address), "escrow: claim key is the zero address"
    grant: bytes32 = empty(bytes32)
    signer: address = empty(address)
    grant, signer = escrow_sigs._claimable_grant(pool_id, claim_key, cap, expiry, grant_provider, admin_sig)
    assert signer == admin, "escrow: grant not signed by the pool admin"
    return grant


@internal
def _open_from_pool(
    pool_id: bytes32, grant: bytes32, signer: address, cap: uint256, expiry: uint256,
    grant_provider: address, student: address, provider: address, deposit: uint256,
    session_key: address, relay_fee: uint256
) -> bytes32:
    admin: address = escrow_pools._pools[pool_id].admin
    assert admin != empty(address), "escrow: no such pool"
    assert block.timestamp <= expiry, "escrow: grant expired"
    assert grant_provider == empty(address) or grant_provider == provider, "escrow: grant is for another provider"
    assert signer == admin, "escrow: grant not signed by the pool admin"
    spent: uint256 = escrow_pools._draw(pool_id, grant, cap, deposit)
    cid: bytes32 = ch._create(student, provider, deposit - relay_fee, session_key, ch.FLAG_POOL)
    ch._pool_of[cid] = pool_id
    ch._grant_of[cid] = grant
    if relay_fee != 0:
        escrow_tokens._send(provider, relay_fee)
    log PoolChannelOpened(channel_id=cid, pool_id=pool_id, grant_hash=grant, spent=spent)
    return cid
