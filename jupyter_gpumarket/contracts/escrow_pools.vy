# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title Escrow credit pools
@notice An educator (the pool admin) funds a pool; students open channels from it under
        EIP-712 Grants (Escrow.openFromPool); refunds flow back to the pool and to the
        grant's allowance, so a grant never spends more than its cap in total.
"""

from . import escrow_tokens

uses: escrow_tokens


struct Pool:
    admin: address
    token: address
    balance: uint256


# What a pool stores (its token is the escrow's one token).
struct PoolSlot:
    admin: address
    balance: uint256


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

event GrantClaimed:
    grant_hash: indexed(bytes32)
    pool_id: indexed(bytes32)
    student: indexed(address)

event GrantRevoked:
    grant_hash: indexed(bytes32)
    pool_id: indexed(bytes32)

# The pool's course terms as JSON (e.g. {"window": "Mon 10:00-12:00 Europe/Berlin"}): the
# latest event is in force; providers read it to refuse or stop leases outside the window.
event PoolTerms:
    pool_id: indexed(bytes32)
    terms: String[512]


_pools: HashMap[bytes32, PoolSlot]
pool_count: public(uint256)
grant_spent: public(HashMap[bytes32, uint256])
# ClaimableGrant hash -> the wallet its claim key bound (zero: not claimed yet)
grant_holder: public(HashMap[bytes32, address])
# pool id -> grant hash -> revoked by the pool admin (a grant's pool id is in its hash)
grant_revoked: public(HashMap[bytes32, HashMap[bytes32, bool]])


@external
@view
def pools(pool_id: bytes32) -> Pool:
    """
    @notice A pool: its admin (zero: no such pool), token (the escrow's) and free balance.
    """
    pool: PoolSlot = self._pools[pool_id]
    return Pool(admin=pool.admin, token=escrow_tokens.token, balance=pool.balance)


@external
def createPool(token: address, amount: uint256) -> bytes32:
    """
    @notice Create a credit pool administered by the caller, funded with `amount` (approve
            first); `token` must be the escrow's token().
    """
    escrow_tokens._require_token(token)
    pool_id: bytes32 = keccak256(abi_encode(self, msg.sender, self.pool_count))
    self.pool_count += 1
    self._pools[pool_id] = PoolSlot(admin=msg.sender, balance=amount)
    if amount != 0:
        escrow_tokens._pull(msg.sender, amount)
    log PoolCreated(pool_id=pool_id, admin=msg.sender, token=token, amount=amount)
    return pool_id


@external
def fundPool(pool_id: bytes32, amount: uint256):
    """
    @notice Add `amount` to a pool (anyone, after approve).
    """
    assert self._pools[pool_id].admin != empty(address), "escrow: no such pool"
    self._pools[pool_id].balance += amount
    escrow_tokens._pull(msg.sender, amount)
    log PoolFunded(pool_id=pool_id, funder=msg.sender, amount=amount)


@external
def withdrawPool(pool_id: bytes32, amount: uint256):
    """
    @notice Pool admin: take back `amount` of the pool's free balance.
    """
    pool: PoolSlot = self._pools[pool_id]
    assert pool.admin != empty(address), "escrow: no such pool"
    assert msg.sender == pool.admin, "escrow: only the pool admin can withdraw"
    assert amount <= pool.balance, "escrow: amount above the pool's free balance"
    self._pools[pool_id].balance = pool.balance - amount
    escrow_tokens._send(msg.sender, amount)
    log PoolWithdrawn(pool_id=pool_id, amount=amount)


@external
def revokeGrant(pool_id: bytes32, grant: bytes32):
    """
    @notice Pool admin: the grant `grant` (a Grant or ClaimableGrant struct hash of this pool)
            pays no further channel; its open channels' vouchers stay redeemable and their
            unspent deposits return to the pool when they close.
    """
    assert msg.sender == self._pools[pool_id].admin, "escrow: only the pool admin can revoke its grants"
    self.grant_revoked[pool_id][grant] = True
    log GrantRevoked(grant_hash=grant, pool_id=pool_id)


@external
def setPoolTerms(pool_id: bytes32, terms: String[512]):
    """
    @notice Pool admin: publish the course's terms (a log only; the latest one counts).
    """
    assert msg.sender == self._pools[pool_id].admin, "escrow: only the pool admin sets its terms"
    log PoolTerms(pool_id=pool_id, terms=terms)


@internal
def _bind(pool_id: bytes32, grant: bytes32, student: address, claim_signer: address, claim_key: address):
    """
    @notice Bind `student` to a claimable grant (first claim), or check it is the bound one.
    """
    holder: address = self.grant_holder[grant]
    if holder == empty(address):
        assert student != empty(address), "escrow: student is the zero address"
        assert claim_signer == claim_key, "escrow: claim not signed by the code's claim key"
        self.grant_holder[grant] = student
        log GrantClaimed(grant_hash=grant, pool_id=pool_id, student=student)
    else:
        assert holder == student, "escrow: this code was already redeemed by another wallet"


@internal
def _draw(pool_id: bytes32, grant: bytes32, cap: uint256, deposit: uint256) -> uint256:
    """
    @notice Take `deposit` from the pool under `grant`; the grant's total after it.
    """
    assert not self.grant_revoked[pool_id][grant], "escrow: grant revoked by the pool admin"
    spent: uint256 = self.grant_spent[grant] + deposit
    assert spent <= cap, "escrow: grant cap exceeded"
    balance: uint256 = self._pools[pool_id].balance
    assert deposit <= balance, "escrow: pool balance too low; ask the admin to fund it"
    self.grant_spent[grant] = spent
    self._pools[pool_id].balance = balance - deposit
    return spent


@internal
def _refund(pool_id: bytes32, grant: bytes32, amount: uint256):
    self._pools[pool_id].balance += amount
    self.grant_spent[grant] -= amount
