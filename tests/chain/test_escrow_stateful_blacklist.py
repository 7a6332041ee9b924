"""The escrow state machine (test_escrow_stateful) on an escrow whose one token can blacklist
addresses, as USDC can: a renter blacklisted mid-lease never blocks its provider's settle, its
refund is owed (model and chain agree after every step) and claimable to another wallet."""

from __future__ import annotations

import pytest
from hostile_tokens import deploy_hostile_token, escrow_holding
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test
from test_escrow_stateful import SETTINGS, deltas, make_machine

from jupyter_gpumarket.chain.client import send


def make_blacklist_machine(c, accounts, close_delay: int, blocker):
    base = make_machine(c, accounts, close_delay)
    renters, providers = [accounts[1], accounts[2], accounts[5]], [accounts[3], accounts[4]]
    everyone = accounts[1:6]

    class BlacklistMachine(base):
        def _block(self, who: str, yes: bool) -> None:
            send(c.w3, accounts[0], blocker.functions.set_blocked(who, yes))
            (self.model.blocked.add if yes else self.model.blocked.discard)(who)

        @rule(who=st.sampled_from(renters), yes=st.booleans())
        def blacklist(self, who, yes):
            """The token blacklists (or clears) a renter: its refunds cannot be delivered."""
            self._block(who.address, yes)

        @rule(cid=base.channels, delta=deltas, claim_to=st.sampled_from([None, *providers]))
        def blacklist_the_renter_then_settle(self, cid, delta, claim_to):
            """Mid-lease, the renter gets blacklisted; its provider settles all the same; the
            renter may then claim its refund to another wallet."""
            renter = self._who(cid, "renter", "right")
            self._block(renter.address, True)
            self.settle(cid, "right", delta)
            if claim_to is not None:
                self.claim_refund(renter, claim_to)

        @rule(sender=st.sampled_from(renters), to=st.sampled_from(everyone))
        def claim_refund(self, sender, to):
            self._both(
                lambda: self.model.claim_refund(sender.address, to.address),
                lambda: send(c.w3, sender, c.escrow.functions.claimRefund(to.address)),
            )

    return BlacklistMachine


@pytest.mark.slow
def test_escrow_matches_its_model_when_the_token_blacklists_renters(contracts, accounts):
    token = deploy_hostile_token(contracts.w3, accounts[0])
    e = escrow_holding(contracts, accounts[0], token)
    for a in accounts[1:6]:
        send(e.w3, accounts[0], token.functions.mint(a.address, 10_000 * 10**6))
    machine = make_blacklist_machine(e, accounts, 600, token)
    run_state_machine_as_test(machine, settings=settings(max_examples=6, **SETTINGS))
