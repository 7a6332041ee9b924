"""What the provider accepted stays redeemable whatever the renter does (issue 17, item 2).

Before: the renter could `rotateSessionKey` while the channel was open; every voucher of the
old key the provider had not redeemed stopped being accepted, and the renter withdrew the whole
deposit after close_delay. Rotation is gone: the channel id binds the key for its lifetime."""

from __future__ import annotations

import pytest
from chain_helpers import USD, advance, open_channel, raw_send, voucher_sig
from eth_account import Account

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.exceptions import TransactionReverted

CLOSE_DELAY = 600  # conftest's


@pytest.mark.parametrize("then", ["settle", "redeem", "settle after requestClose"])
def test_a_renter_cannot_cancel_vouchers_it_signed(any_chain, accounts, then):
    c, renter, provider = any_chain, accounts[1], accounts[2]
    cid, session = open_channel(c, renter, provider, 5 * USD)
    accepted = voucher_sig(c, session, cid, 3 * USD)  # the provider served 3 USD for this
    # the renter tries to swap the key for one of its own (and the renter itself) ...
    for new_key in (Account.create().address, renter.address):
        with pytest.raises(TransactionReverted):
            raw_send(c, renter, "rotateSessionKey(bytes32,address)", ["bytes32", "address"],
                     [cid, new_key])  # fmt: skip
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, USD))
    send(c.w3, renter, c.escrow.functions.topUp(cid, USD))
    if then == "settle after requestClose":
        send(c.w3, renter, c.escrow.functions.requestClose(cid))
        advance(c, CLOSE_DELAY - 60)  # still inside the challenge period
    before = c.token.functions.balanceOf(provider.address).call()
    fn = c.escrow.functions.redeem if then == "redeem" else c.escrow.functions.settle
    send(c.w3, provider, fn(cid, 3 * USD, accepted))
    assert c.token.functions.balanceOf(provider.address).call() == before + 3 * USD
    assert c.escrow.functions.channels(cid).call()[3] == "0x" + "00" * 20  # no other key
