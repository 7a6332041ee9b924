"""A pure-Python model of ``contracts/Escrow.vy``'s money rules (no signatures, no I/O).

The hypothesis state machine in tests/chain drives random operations against the contract
and against this model; the model says whether each operation must revert (raising
``PaymentError`` with the contract's revert string) and what every balance must be after it.

Channel states, as in the contract::

    OPEN --requestClose--> CLOSING --withdraw (after close_at)--> CLOSED / CLOSED_PAID
    OPEN | CLOSING --settle--> CLOSED (nothing paid) / CLOSED_PAID
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jupyter_gpumarket.exceptions import PaymentError

__all__ = ["ChannelState", "EscrowModel", "ModelChannel", "ModelPool"]

MAX_AMOUNT = 2**88 - 1
MAX_RELAY_FEE_DIVISOR = 10  # a relayed opening's fee is at most deposit // 10


class ChannelState:
    OPEN = 1
    CLOSING = 2
    CLOSED = 3
    CLOSED_PAID = 4


@dataclass
class ModelChannel:
    renter: str
    provider: str
    deposit: int
    redeemed: int = 0
    state: int = ChannelState.OPEN
    close_at: int = 0
    pool: str | None = None
    grant: str | None = None


@dataclass
class ModelPool:
    admin: str
    balance: int


@dataclass
class EscrowModel:
    """Balances of every participant, the escrow's channels and pools."""

    close_delay: int
    balances: dict[str, int] = field(default_factory=dict)
    channels: dict[str, ModelChannel] = field(default_factory=dict)
    pools: dict[str, ModelPool] = field(default_factory=dict)
    grant_spent: dict[str, int] = field(default_factory=dict)
    # addresses the token refuses to move money from or to (a stablecoin's blacklist), and the
    # refunds the escrow owes renters it could not pay (Escrow.refund_owed)
    blocked: set[str] = field(default_factory=set)
    refund_owed: dict[str, int] = field(default_factory=dict)

    # --- helpers ----------------------------------------------------------------------------
    def escrow_holdings(self) -> int:
        """What the escrow must hold: unredeemed deposits of live channels plus pool balances."""
        live = sum(
            c.deposit - c.redeemed
            for c in self.channels.values()
            if c.state in (ChannelState.OPEN, ChannelState.CLOSING)
        )
        owed = sum(self.refund_owed.values())
        return live + sum(p.balance for p in self.pools.values()) + owed

    def _move(self, src: str, dst: str, amount: int) -> None:
        if src in self.blocked or dst in self.blocked:
            raise PaymentError("token: address is blocked")
        if self.balances.get(src, 0) < amount:
            raise PaymentError("erc20: transfer amount exceeds balance")
        self.balances[src] = self.balances.get(src, 0) - amount
        self.balances[dst] = self.balances.get(dst, 0) + amount

    def _channel(self, cid: str) -> ModelChannel:
        if cid not in self.channels:
            raise PaymentError("escrow: no such channel")
        return self.channels[cid]

    def _require_open(self, ch: ModelChannel) -> None:
        if ch.state == ChannelState.CLOSING:
            raise PaymentError("escrow: channel is closing")
        if ch.state != ChannelState.OPEN:
            raise PaymentError("escrow: channel is closed")

    def _require_live(self, ch: ModelChannel) -> None:
        if ch.state not in (ChannelState.OPEN, ChannelState.CLOSING):
            raise PaymentError("escrow: channel is closed")

    def _close(self, ch: ModelChannel, paid: int) -> int:
        refund = ch.deposit - paid
        ch.redeemed = paid
        ch.state = ChannelState.CLOSED_PAID if paid else ChannelState.CLOSED
        if refund:
            if ch.pool is not None:
                self.pools[ch.pool].balance += refund
                assert ch.grant is not None
                self.grant_spent[ch.grant] -= refund
            elif ch.renter in self.blocked:  # the escrow owes it instead of reverting
                self.refund_owed[ch.renter] = self.refund_owed.get(ch.renter, 0) + refund
            else:
                self._move("escrow", ch.renter, refund)
        return refund

    # --- operations (sender first, like msg.sender) -----------------------------------------
    def open(self, cid: str, renter: str, provider: str, deposit: int) -> None:
        self._create(cid, renter, provider, deposit)
        self._pull_or_undo(cid, renter, deposit)

    def _pull_or_undo(self, cid: str, renter: str, amount: int) -> None:
        try:
            self._move(renter, "escrow", amount)
        except PaymentError:
            del self.channels[cid]  # the transaction reverts: no channel
            raise

    def open_for(self, cid: str, renter: str, provider: str, deposit: int, fee: int) -> None:
        """A relayed opening paid by the renter's wallet; the fee goes to the provider."""
        self._check_fee(deposit, fee)
        self._create(cid, renter, provider, deposit - fee)
        self._pull_or_undo(cid, renter, deposit)
        self._move("escrow", provider, fee)

    @staticmethod
    def _check_fee(deposit: int, fee: int) -> None:
        if fee > deposit // MAX_RELAY_FEE_DIVISOR:
            raise PaymentError("escrow: relay fee above a tenth of the deposit")

    def _create(self, cid: str, renter: str, provider: str, deposit: int) -> ModelChannel:
        if deposit == 0:
            raise PaymentError("escrow: deposit is zero")
        if deposit > MAX_AMOUNT:
            raise PaymentError("escrow: deposit above 2**88-1 base units")
        if cid in self.channels:
            raise PaymentError("escrow: channel for this session key exists")
        ch = ModelChannel(renter=renter, provider=provider, deposit=deposit)
        self.channels[cid] = ch
        return ch

    def top_up(self, sender: str, cid: str, amount: int) -> None:
        ch = self._channel(cid)
        self._require_open(ch)
        if sender != ch.renter:
            raise PaymentError("escrow: only the channel's renter can top up")
        if ch.pool is not None:
            raise PaymentError("escrow: pool channels are topped up by opening another")
        if amount == 0:
            raise PaymentError("escrow: amount is zero")
        if ch.deposit + amount > MAX_AMOUNT:
            raise PaymentError("escrow: deposit above 2**88-1 base units")
        self._move(sender, "escrow", amount)
        ch.deposit += amount

    def redeem(self, sender: str, cid: str, amount: int) -> None:
        ch = self._channel(cid)
        self._require_live(ch)
        if sender != ch.provider:
            raise PaymentError("escrow: only the channel's provider can redeem")
        if amount <= ch.redeemed:
            raise PaymentError("escrow: voucher amount is not above what was already redeemed")
        if amount > ch.deposit:
            raise PaymentError("escrow: voucher amount above the deposit")
        self._move("escrow", ch.provider, amount - ch.redeemed)
        ch.redeemed = amount

    def settle(self, sender: str, cid: str, amount: int) -> None:
        ch = self._channel(cid)
        self._require_live(ch)
        if sender != ch.provider:
            raise PaymentError("escrow: only the channel's provider can settle")
        if amount < ch.redeemed:
            raise PaymentError("escrow: voucher amount is below what was already redeemed")
        if amount != ch.redeemed and amount > ch.deposit:
            raise PaymentError("escrow: voucher amount above the deposit")
        previously = ch.redeemed
        self._close(ch, amount)
        self._move("escrow", ch.provider, amount - previously)

    def request_close(self, sender: str, cid: str, now: int) -> None:
        ch = self._channel(cid)
        self._require_open(ch)
        if sender != ch.renter:
            raise PaymentError("escrow: only the channel's renter can request close")
        ch.state = ChannelState.CLOSING
        ch.close_at = now + self.close_delay

    def withdraw(self, sender: str, cid: str, now: int) -> None:
        ch = self._channel(cid)
        if ch.state == ChannelState.OPEN:
            raise PaymentError("escrow: call requestClose first, then wait close_delay")
        if ch.state != ChannelState.CLOSING:
            raise PaymentError("escrow: channel is closed")
        if sender != ch.renter:
            raise PaymentError("escrow: only the channel's renter can withdraw")
        if now < ch.close_at:
            raise PaymentError("escrow: close delay not over; try again after close_at")
        self._close(ch, ch.redeemed)

    def claim_refund(self, sender: str, to: str) -> None:
        amount = self.refund_owed.get(sender, 0)
        if amount == 0:
            raise PaymentError("escrow: no refund owed to this address")
        self._move("escrow", to, amount)
        self.refund_owed[sender] = 0

    def create_pool(self, pool_id: str, admin: str, amount: int) -> None:
        if amount:
            self._move(admin, "escrow", amount)
        self.pools[pool_id] = ModelPool(admin=admin, balance=amount)

    def withdraw_pool(self, sender: str, pool_id: str, amount: int) -> None:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise PaymentError("escrow: no such pool")
        if sender != pool.admin:
            raise PaymentError("escrow: only the pool admin can withdraw")
        if amount > pool.balance:
            raise PaymentError("escrow: amount above the pool's free balance")
        pool.balance -= amount
        self._move("escrow", sender, amount)

    def open_from_pool(
        self,
        cid: str,
        sender: str,
        pool_id: str,
        grant: str,
        student: str,
        cap: int,
        provider: str,
        deposit: int,
    ) -> None:
        if sender != student:
            raise PaymentError("escrow: grant is for another student")
        self._open_from_pool(cid, pool_id, grant, student, cap, provider, deposit, 0)

    def open_from_pool_for(
        self,
        cid: str,
        pool_id: str,
        grant: str,
        student: str,
        cap: int,
        provider: str,
        deposit: int,
        fee: int,
    ) -> None:
        """A relayed pool opening (anyone sends it); the fee goes to the provider."""
        self._check_fee(deposit, fee)
        self._open_from_pool(cid, pool_id, grant, student, cap, provider, deposit, fee)

    def _open_from_pool(
        self,
        cid: str,
        pool_id: str,
        grant: str,
        student: str,
        cap: int,
        provider: str,
        deposit: int,
        fee: int,
    ) -> None:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise PaymentError("escrow: no such pool")
        spent = self.grant_spent.get(grant, 0) + deposit
        if spent > cap:
            raise PaymentError("escrow: grant cap exceeded")
        if deposit > pool.balance:
            raise PaymentError("escrow: pool balance too low; ask the admin to fund it")
        ch = self._create(cid, student, provider, deposit - fee)
        self.grant_spent[grant] = spent
        pool.balance -= deposit
        ch.pool, ch.grant = pool_id, grant
        self._move("escrow", provider, fee)
