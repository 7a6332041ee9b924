"""A refund the token refused at settle is claimed by `gpumarket leases close`, shown by
`gpumarket leases` and sent elsewhere by `gpumarket leases claim-refund --to ADDRESS`.

Before: the escrow kept it as ``refund_owed(renter)`` but nothing on the renter's side ever
read it: `leases close` recorded the lease as settled with the refund "refunded", the list
showed nothing, and the money stayed in the escrow unless the renter called claimRefund by
hand."""

from __future__ import annotations

import pytest
from chain_helpers import USD, balance, voucher_sig
from eth_account import Account
from hostile_tokens import deploy_hostile_token, escrow_holding

from jupyter_gpumarket.chain import keystore
from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.profiles import NetworkProfile, save_profile
from jupyter_gpumarket.chain.renter_ledger import RenterLedger
from jupyter_gpumarket.cli import main
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.renter_lease_state import RenterEvent

PAID = 2 * USD
OWED = 5 * USD - PAID


@pytest.fixture
def settled_while_blocked(any_chain, accounts, tmp_path, monkeypatch):
    """A lease on an escrow of a blacklisting token, settled by the provider while the token
    refused the renter: its refund is owed. The renter's wallet, profile and ledger are set."""
    c, renter, provider = any_chain, accounts[1], accounts[2]
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    monkeypatch.setenv("GPUMARKET_WALLET_PASSWORD", "pw")
    keystore.create_keystore("pw", private_key=renter.key)
    token = deploy_hostile_token(c.w3, accounts[0])
    e = escrow_holding(c, accounts[0], token)
    save_profile(
        NetworkProfile(
            name="hostile",
            rpc_url=c.w3.provider.endpoint_uri,
            chain_id=c.w3.eth.chain_id,
            token=token.address,
            escrow=e.escrow.address,
            registry=e.registry.address,
        )
    )
    send(c.w3, accounts[0], token.functions.mint(renter.address, 5 * USD))
    send(c.w3, renter, token.functions.approve(e.escrow.address, 5 * USD))
    session = Account.create()
    send(
        c.w3,
        renter,
        e.escrow.functions.open(provider.address, token.address, 5 * USD, session.address),
    )
    cid = eip712.channel_id_for(renter.address, session.address)
    rec = RenterLedger().create(
        provider=provider.address,
        channel_id=cid,
        network="hostile",
        renter=renter.address,
        price_per_hour=3600,
        deposit=5 * USD,
    )
    send(c.w3, accounts[0], token.functions.set_blocked(renter.address, True))
    send(c.w3, provider, e.escrow.functions.settle(cid, PAID, voucher_sig(e, session, cid, PAID)))
    assert e.escrow.functions.refund_owed(renter.address).call() == OWED
    return e, token, rec


def _unblock(e, token, accounts) -> None:
    send(e.w3, accounts[0], token.functions.set_blocked(accounts[1].address, False))


def test_leases_lists_the_owed_refund(settled_while_blocked, accounts, capsys):
    _e, _token, rec = settled_while_blocked
    RenterLedger().transition(rec.id, RenterEvent.CHAIN_SETTLED, spent=PAID, refunded=OWED)
    assert main(["leases"]) == 0
    out = capsys.readouterr().out
    assert "refund owed to " + accounts[1].address in out
    assert "claim-refund" in out


def test_close_claims_it_once_the_token_serves_the_renter(settled_while_blocked, accounts, capsys):
    e, token, rec = settled_while_blocked
    renter = accounts[1]
    _unblock(e, token, accounts)
    assert main(["leases", "close", rec.id]) == 0
    assert balance(e, renter) == OWED
    assert e.escrow.functions.refund_owed(renter.address).call() == 0
    done = RenterLedger().get(rec.id)
    assert done.state == "settled"
    # the provider's settle, found on chain by reconcile, and the renter's claim
    assert [tx["kind"] for tx in done.txs] == ["claim_refund", "settle"]


def test_close_of_a_lease_already_settled_claims_it(settled_while_blocked, accounts, capsys):
    e, token, rec = settled_while_blocked
    RenterLedger().transition(rec.id, RenterEvent.CHAIN_SETTLED, spent=PAID, refunded=OWED)
    _unblock(e, token, accounts)
    assert main(["leases", "close", rec.id]) == 0
    assert "claimed" in capsys.readouterr().out
    assert balance(e, accounts[1]) == OWED
    assert e.escrow.functions.refund_owed(accounts[1].address).call() == 0


def test_a_still_refused_refund_goes_to_another_wallet(settled_while_blocked, accounts, capsys):
    e, _token, rec = settled_while_blocked
    renter, other = accounts[1], accounts[6]
    assert main(["leases", "close", rec.id]) == 0  # the token still refuses the renter
    out = capsys.readouterr().out
    assert "refund owed to " + renter.address in out
    assert "claim-refund --to ADDRESS" in out
    assert e.escrow.functions.refund_owed(renter.address).call() == OWED
    before = balance(e, other)
    cmd = ["leases", "claim-refund", "--to", other.address, "--network", "hostile"]
    assert main(cmd) == 0
    assert balance(e, other) == before + OWED
    assert e.escrow.functions.refund_owed(renter.address).call() == 0
    assert main(cmd) == 0
    assert "no refund owed" in capsys.readouterr().out
