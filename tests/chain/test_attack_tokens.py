"""A channel paid in anything but the escrow's one token cannot exist (issue 17, items 1, 10).

Before: anyone could `addToken`, so a renter opened a channel "funded" with its own token whose
transferFrom returns true and moves nothing (the provider served it; settle paid nothing), or
with a fee-on-transfer token (booked at face value: the last renter's withdraw reverted)."""

from __future__ import annotations

import pytest
from chain_helpers import USD, now, open_channel_sig, raw_send, reverts
from eth_account import Account
from hostile_tokens import deploy_hostile_token

from jupyter_gpumarket.chain.client import deploy, send
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.exceptions import TransactionReverted

ONLY_ITS_TOKEN = "this escrow only holds its token()"
HUGE = 2**88 - 1


@pytest.mark.parametrize("kind", ["worthless", "fee-on-transfer"])
def test_a_channel_in_another_token_cannot_be_opened(any_chain, accounts, kind):
    c, renter, provider, relayer = any_chain, accounts[1], accounts[2], accounts[3]
    other = deploy_hostile_token(
        c.w3, renter, fake=kind == "worthless", fee_bps=100 if kind == "fee-on-transfer" else 0
    )
    send(c.w3, renter, other.functions.mint(renter.address, HUGE))
    send(c.w3, renter, other.functions.approve(c.escrow.address, HUGE))
    # listing a token is nobody's business any more: the entry point is gone
    with pytest.raises(TransactionReverted):
        raw_send(c, renter, "addToken(address)", ["address"], [other.address])
    session = Account.create()
    with reverts(ONLY_ITS_TOKEN):
        send(
            c.w3,
            renter,
            c.escrow.functions.open(provider.address, other.address, HUGE, session.address),
        )
    # nor through a relayer, with the renter's signed opening in that token
    deadline = now(c) + 600
    typed = eip712.open_channel(
        eip712.Domain(c.w3.eth.chain_id, c.escrow.address),
        renter=renter.address, provider=provider.address, token=other.address, deposit=HUGE,
        session_key=session.address, relay_fee=0, deadline=deadline,
    )  # fmt: skip
    sig = eip712.sign_typed_data(renter.key, typed)
    with reverts(ONLY_ITS_TOKEN):
        send(
            c.w3,
            relayer,
            c.escrow.functions.openFor(
                renter.address, provider.address, other.address, HUGE, session.address, 0,
                deadline, sig, 0, b"\0" * 32, b"\0" * 32,
            ),
        )  # fmt: skip
    with reverts(ONLY_ITS_TOKEN):
        send(c.w3, renter, c.escrow.functions.createPool(other.address, USD))
    cid = eip712.channel_id_for(renter.address, session.address)
    assert c.escrow.functions.channels(cid).call()[7] == 0  # no such channel


def test_the_escrow_names_its_token_and_every_channel_uses_it(any_chain, accounts):
    """What the provider compares with its offer's token: `token()` (and channels().token)."""
    c, renter, provider = any_chain, accounts[1], accounts[2]
    assert c.escrow.functions.token().call() == c.token.address
    session, deadline = Account.create(), now(c) + 600
    sig = open_channel_sig(c, renter, provider, session, USD, 0, deadline)
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, USD))
    send(
        c.w3,
        accounts[3],
        c.escrow.functions.openFor(
            renter.address, provider.address, c.token.address, USD, session.address, 0,
            deadline, sig, 0, b"\0" * 32, b"\0" * 32,
        ),
    )  # fmt: skip
    cid = eip712.channel_id_for(renter.address, session.address)
    assert c.escrow.functions.channels(cid).call()[2] == c.token.address


def test_an_escrow_needs_a_token_contract(any_chain, accounts):
    with pytest.raises(TransactionReverted, match="token has no code"):
        deploy(any_chain.w3, accounts[0], "Escrow", 600, accounts[5].address)
