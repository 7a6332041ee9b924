"""A devnet that mined nothing for a while: time-locked calls still go through."""

from __future__ import annotations

import time

from chain_helpers import USD

from jupyter_gpumarket.chain.client import Contracts
from jupyter_gpumarket.chain.deploy import deploy_all
from jupyter_gpumarket.chain.leases import LeaseChain


def test_withdraw_after_close_at_on_a_chain_that_mined_no_block_since(w3, accounts):
    d = deploy_all(w3, accounts[0], 1, fund=[accounts[1].address])  # close_delay = 1 s
    chain = LeaseChain(Contracts.at(w3, d.token, d.escrow, d.registry))
    renter = accounts[1]
    opened = chain.open(renter, provider=accounts[2].address, price_per_hour=1, deposit=USD)
    assert chain.recover_deposit(renter, opened.channel_id).state == "closing"
    time.sleep(2.5)  # wall time passes; anvil mines nothing, its latest block stays old
    step = chain.recover_deposit(renter, opened.channel_id)
    assert step.state == "withdrawn"
    assert step.refunded == USD
