"""The normal lease stays below µRaiden's open + cooperative close (189,177 gas)."""

from __future__ import annotations

from chain_helpers import USD, voucher_sig
from eth_account import Account

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.core import eip712

URAIDEN_OPEN_PLUS_CLOSE = 189_177


def test_open_plus_settle_below_uraiden(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, 2 * USD))
    session = Account.create()
    opened = send(
        c.w3,
        renter,
        c.escrow.functions.open(provider.address, c.token.address, 2 * USD, session.address),
    )
    cid = eip712.channel_id_for(renter.address, session.address)
    settled = send(
        c.w3, provider, c.escrow.functions.settle(cid, 12_345, voucher_sig(c, session, cid, 12_345))
    )
    total = opened["gasUsed"] + settled["gasUsed"]
    assert total < URAIDEN_OPEN_PLUS_CLOSE, total
