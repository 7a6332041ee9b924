"""chain.escrow.EscrowClient: the wrapper the lease code uses."""

from __future__ import annotations

from chain_helpers import USD, reverts

from jupyter_gpumarket.chain.escrow import EscrowClient
from jupyter_gpumarket.chain.session_keys import new_session_key, session_channel_id


def test_lease_through_the_client(contracts, accounts):
    client, renter, provider = EscrowClient(contracts), accounts[1], accounts[2]
    session = new_session_key()
    cid = client.open(renter, provider.address, 3 * USD, session.address)
    assert cid == session_channel_id(renter.address, session)
    info = client.channel(cid)
    assert (info.state, info.deposit, info.session_key, info.pool_id) == (
        "open",
        3 * USD,
        None,
        None,
    )
    client.redeem(provider, cid, 10, client.sign_voucher(session, cid, 10))
    with reverts("Escrow.settle reverted: escrow: voucher amount above the deposit"):
        client.settle(provider, cid, 3 * USD + 1, client.sign_voucher(session, cid, 3 * USD + 1))
    client.settle(provider, cid, 20, client.sign_voucher(session, cid, 20))
    assert client.channel(cid).state == "closed-paid"
    assert client.channel(b"\x01" * 32).state == "none"
