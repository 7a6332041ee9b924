"""Random operation sequences against the Escrow and against core.escrow_model: the same
operations revert (with the model's reason), balances agree, and the escrow holds exactly the
unredeemed deposits of live channels plus the pools (conservation). After every step the
provider of every live channel can still collect the most it may have accepted (a voucher for
the whole deposit) whatever the renter did: openings relayed by anyone (wallet and pool), an
opening in a foreign token and a session-key rotation are among the renter's moves."""

from __future__ import annotations

import pytest
from chain_helpers import raw_send, voucher_sig
from eth_account import Account
from hostile_tokens import deploy_hostile_token
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from web3.logs import DISCARD

from jupyter_gpumarket.chain.client import Contracts, send
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.escrow_model import ChannelState, EscrowModel
from jupyter_gpumarket.exceptions import PaymentError, TransactionReverted

ZERO = "0x" + "00" * 20
amounts = st.integers(0, 3_000)
# voucher amounts relative to what was already redeemed; the edges (-1, 0, +1) matter most
deltas = st.one_of(st.sampled_from([-1, 0, 1]), st.integers(2, 3_000))
# "right" = the party the contract expects (renter/provider); an index = someone else
parties = st.one_of(st.just("right"), st.just("right"), st.just("right"), st.integers(0, 4))
# relay fees: mostly within a tenth of the deposit, sometimes above it
fees = st.one_of(st.just(0), st.integers(1, 100), st.integers(101, 3_000))
DEADLINE = 2**40


def open_sig(w3, c, signer, provider: str, deposit: int, session, fee: int, pool_id: bytes):
    """The signer's OpenChannel, whatever the fee (the Python builder refuses fees the escrow
    refuses; the escrow must refuse them by itself)."""
    typed = eip712.open_channel(
        eip712.Domain(w3.eth.chain_id, c.escrow.address),
        renter=signer.address, provider=provider, token=c.token.address, deposit=deposit,
        session_key=session.address, relay_fee=0, deadline=DEADLINE, pool_id=pool_id,
    )  # fmt: skip
    typed["message"]["relayFee"] = fee
    return eip712.sign_typed_data(signer.key, typed)


def make_machine(c: Contracts, accounts, close_delay: int):
    renters, providers = [accounts[1], accounts[2]], [accounts[3], accounts[4]]
    admin, student = accounts[4], accounts[5]
    everyone = [accounts[1], accounts[2], accounts[3], accounts[4], accounts[5]]
    w3 = c.w3
    foreign = deploy_hostile_token(w3, accounts[0], fake=True)  # "transfers" nothing

    class EscrowMachine(RuleBasedStateMachine):
        channels = Bundle("channels")
        pools = Bundle("pools")

        def __init__(self) -> None:
            super().__init__()
            self.snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
            self.model = EscrowModel(close_delay=close_delay)
            for a in everyone:
                self.model.balances[a.address] = c.token.functions.balanceOf(a.address).call()
            self.model.balances["escrow"] = c.token.functions.balanceOf(c.escrow.address).call()
            self.base_holdings = self.model.balances["escrow"]
            self.sessions: dict[str, object] = {}
            self.grants: dict[str, tuple] = {}

        def teardown(self) -> None:
            w3.provider.make_request("evm_revert", [self.snapshot])

        def _who(self, cid, role: str, party):
            ch = self.model.channels.get(cid.hex())
            if party == "right" and ch is not None:
                address = getattr(ch, role)
                return next(a for a in everyone if a.address == address)
            return everyone[0 if party == "right" else party]

        def _amount(self, cid, delta: int) -> int:
            ch = self.model.channels.get(cid.hex())
            return max(0, (ch.redeemed if ch else 0) + delta)

        def _both(self, model_op, chain_op):
            """Apply to the model; the chain must then succeed, or revert for the same reason."""
            reason = None
            try:
                model_op()
            except PaymentError as exc:
                reason = str(exc)
            if reason is None:
                return chain_op()
            with pytest.raises(TransactionReverted) as info:
                chain_op()
            assert reason in str(info.value)
            return None

        @initialize(
            target=channels,
            renter=st.sampled_from(renters),
            provider=st.sampled_from(providers),
            deposit=st.integers(1, 3_000),
        )
        def start_with_a_live_channel(self, renter, provider, deposit):
            return self._open(renter, provider, deposit)

        @rule(
            target=channels,
            renter=st.sampled_from(renters),
            provider=st.sampled_from(providers),
            deposit=amounts,
        )
        def open(self, renter, provider, deposit):
            return self._open(renter, provider, deposit)

        def _open(self, renter, provider, deposit):
            session = Account.create()
            cid = eip712.channel_id_for(renter.address, session.address)
            self.sessions[cid.hex()] = session
            send(w3, renter, c.token.functions.approve(c.escrow.address, deposit))
            self._both(
                lambda: self.model.open(cid.hex(), renter.address, provider.address, deposit),
                lambda: send(
                    w3,
                    renter,
                    c.escrow.functions.open(
                        provider.address, c.token.address, deposit, session.address
                    ),
                ),
            )
            return cid

        @rule(
            target=channels,
            renter=st.sampled_from(renters),
            provider=st.sampled_from(providers),
            relayer=st.sampled_from(everyone),
            deposit=amounts,
            fee=fees,
        )
        def open_for(self, renter, provider, relayer, deposit, fee):
            """A relayed wallet opening, sent by anyone: the fee goes to the provider."""
            session = Account.create()
            cid = eip712.channel_id_for(renter.address, session.address)
            self.sessions[cid.hex()] = session
            send(w3, renter, c.token.functions.approve(c.escrow.address, deposit))
            sig = open_sig(w3, c, renter, provider.address, deposit, session, fee, bytes(32))
            fn = c.escrow.functions.openFor(
                renter.address, provider.address, c.token.address, deposit, session.address,
                fee, DEADLINE, sig, 0, b"\0" * 32, b"\0" * 32,
            )  # fmt: skip
            self._both(
                lambda: self.model.open_for(
                    cid.hex(), renter.address, provider.address, deposit, fee
                ),
                lambda: send(w3, relayer, fn),
            )
            return cid

        @rule(
            renter=st.sampled_from(renters),
            provider=st.sampled_from(providers),
            deposit=amounts,
        )
        def open_in_a_foreign_token(self, renter, provider, deposit):
            send(w3, renter, foreign.functions.approve(c.escrow.address, deposit))
            fn = c.escrow.functions.open(
                provider.address, foreign.address, deposit, Account.create().address
            )
            with pytest.raises(TransactionReverted, match="only holds its token"):
                send(w3, renter, fn)

        @rule(cid=channels, party=parties)
        def rotate_session_key(self, cid, party):
            """The renter (or anyone) tries to swap the channel's key: no such entry point."""
            sender = self._who(cid, "renter", party)
            with pytest.raises(TransactionReverted):
                raw_send(
                    c, sender, "rotateSessionKey(bytes32,address)", ["bytes32", "address"],
                    [cid, Account.create().address],
                )  # fmt: skip

        @rule(cid=channels, party=parties, amount=amounts)
        def top_up(self, cid, party, amount):
            sender = self._who(cid, "renter", party)
            send(w3, sender, c.token.functions.approve(c.escrow.address, amount))
            self._both(
                lambda: self.model.top_up(sender.address, cid.hex(), amount),
                lambda: send(w3, sender, c.escrow.functions.topUp(cid, amount)),
            )

        @rule(cid=channels, party=parties, delta=deltas)
        def redeem(self, cid, party, delta):
            sender, amount = self._who(cid, "provider", party), self._amount(cid, delta)
            sig = voucher_sig(c, self.sessions[cid.hex()], cid, amount)
            self._both(
                lambda: self.model.redeem(sender.address, cid.hex(), amount),
                lambda: send(w3, sender, c.escrow.functions.redeem(cid, amount, sig)),
            )

        @rule(cid=channels, party=parties, delta=deltas)
        def settle(self, cid, party, delta):
            sender, amount = self._who(cid, "provider", party), self._amount(cid, delta)
            sig = voucher_sig(c, self.sessions[cid.hex()], cid, amount)
            self._both(
                lambda: self.model.settle(sender.address, cid.hex(), amount),
                lambda: send(w3, sender, c.escrow.functions.settle(cid, amount, sig)),
            )

        @rule(cid=channels, party=parties)
        def request_close(self, cid, party):
            sender = self._who(cid, "renter", party)
            receipt = self._both(
                lambda: self.model.request_close(sender.address, cid.hex(), 0),
                lambda: send(w3, sender, c.escrow.functions.requestClose(cid)),
            )
            if receipt is not None:  # the model learns the real block time
                ts = w3.eth.get_block(receipt["blockNumber"])["timestamp"]
                self.model.channels[cid.hex()].close_at = ts + close_delay

        @rule()
        def wait_out_the_close_delay(self):
            w3.provider.make_request("evm_increaseTime", [close_delay + 5])
            w3.provider.make_request("evm_mine", [])

        @rule(cid=channels, party=parties)
        def withdraw(self, cid, party):
            sender = self._who(cid, "renter", party)
            now = w3.eth.get_block("latest")["timestamp"] + 1
            self._both(
                lambda: self.model.withdraw(sender.address, cid.hex(), now),
                lambda: send(w3, sender, c.escrow.functions.withdraw(cid)),
            )

        @rule(target=pools, amount=amounts, cap=amounts)
        def create_pool(self, amount, cap):
            send(w3, admin, c.token.functions.approve(c.escrow.address, amount))
            receipt = send(w3, admin, c.escrow.functions.createPool(c.token.address, amount))
            (event,) = c.escrow.events.PoolCreated().process_receipt(receipt, errors=DISCARD)
            pool_id = bytes(event["args"]["pool_id"])
            self.model.create_pool(pool_id.hex(), admin.address, amount)
            expiry = 2**40
            sig = eip712.sign_typed_data(
                admin.key,
                eip712.grant(
                    eip712.Domain(w3.eth.chain_id, c.escrow.address),
                    pool_id=pool_id,
                    student=student.address,
                    cap=cap,
                    expiry=expiry,
                    provider=ZERO,
                ),
            )
            self.grants[pool_id.hex()] = (pool_id, student.address, cap, expiry, ZERO, sig)
            return pool_id

        @rule(
            target=channels,
            pool_id=pools,
            sender=st.sampled_from([student, accounts[1]]),
            provider=st.sampled_from(providers),
            deposit=amounts,
        )
        def open_from_pool(self, pool_id, sender, provider, deposit):
            grant = self.grants[pool_id.hex()]
            session = Account.create()
            cid = eip712.channel_id_for(student.address, session.address)
            self.sessions[cid.hex()] = session
            ghash = eip712.grant_hash(
                pool_id=pool_id,
                student=student.address,
                cap=grant[2],
                expiry=grant[3],
                provider=ZERO,
            ).hex()
            self._both(
                lambda: self.model.open_from_pool(
                    cid.hex(),
                    sender.address,
                    pool_id.hex(),
                    ghash,
                    student.address,
                    grant[2],
                    provider.address,
                    deposit,
                ),
                lambda: send(
                    w3,
                    sender,
                    c.escrow.functions.openFromPool(
                        *grant, provider.address, deposit, session.address
                    ),
                ),
            )
            return cid

        @rule(
            target=channels,
            pool_id=pools,
            relayer=st.sampled_from(everyone),
            provider=st.sampled_from(providers),
            deposit=amounts,
            fee=fees,
        )
        def open_from_pool_for(self, pool_id, relayer, provider, deposit, fee):
            """The student's signed pool opening, relayed by anyone; the provider gets the fee."""
            grant = self.grants[pool_id.hex()]
            session = Account.create()
            cid = eip712.channel_id_for(student.address, session.address)
            self.sessions[cid.hex()] = session
            ghash = eip712.grant_hash(
                pool_id=pool_id, student=student.address, cap=grant[2], expiry=grant[3],
                provider=ZERO,
            ).hex()  # fmt: skip
            sig = open_sig(w3, c, student, provider.address, deposit, session, fee, pool_id)
            fn = c.escrow.functions.openFromPoolFor(
                *grant, provider.address, deposit, session.address, fee, DEADLINE, sig
            )
            self._both(
                lambda: self.model.open_from_pool_for(
                    cid.hex(),
                    pool_id.hex(),
                    ghash,
                    student.address,
                    grant[2],
                    provider.address,
                    deposit,
                    fee,
                ),
                lambda: send(w3, relayer, fn),
            )
            return cid

        @rule(pool_id=pools, sender=st.sampled_from([admin, accounts[1]]), amount=amounts)
        def withdraw_pool(self, pool_id, sender, amount):
            self._both(
                lambda: self.model.withdraw_pool(sender.address, pool_id.hex(), amount),
                lambda: send(w3, sender, c.escrow.functions.withdrawPool(pool_id, amount)),
            )

        @invariant()
        def balances_agree_and_escrow_conserves(self):
            for a in everyone:
                assert (
                    c.token.functions.balanceOf(a.address).call() == self.model.balances[a.address]
                )
                owed = c.escrow.functions.refund_owed(a.address).call()
                assert owed == self.model.refund_owed.get(a.address, 0)
            held = c.token.functions.balanceOf(c.escrow.address).call()
            assert held == self.model.balances["escrow"]
            assert held == self.base_holdings + self.model.escrow_holdings()

        @invariant()
        def providers_can_collect_what_they_accepted(self):
            """Each live channel settles for its whole deposit (the most its provider may have
            accepted) and for what was redeemed (no signature): a dry run, nothing changes."""
            for cid_hex, ch in self.model.channels.items():
                if ch.state not in (ChannelState.OPEN, ChannelState.CLOSING):
                    continue
                cid = bytes.fromhex(cid_hex)
                sig = voucher_sig(c, self.sessions[cid_hex], cid, ch.deposit)
                for amount, signature in ((ch.deposit, sig), (ch.redeemed, b"")):
                    c.escrow.functions.settle(cid, amount, signature).call({"from": ch.provider})

    return EscrowMachine


SETTINGS = dict(
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # no shrinking: on 2 CI cores a shrink of chain transactions takes minutes; the
    # failing sequence is printed as generated
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    database=None,
)


@pytest.mark.slow
def test_escrow_matches_its_model(contracts, accounts, deployment):
    machine = make_machine(contracts, accounts, deployment.close_delay)
    run_state_machine_as_test(machine, settings=settings(max_examples=12, **SETTINGS))
