"""A channel opening signed by a browser wallet (provisioning.browser_lease.Pending.submit)
against the real escrow on anvil: what the server accepts is exactly what the contract
accepts. Each refused answer is also refused by the contract (eth_call of the relayed
openFor), and each accepted one goes through it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from chain_helpers import USD
from eth_account import Account

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.browser_open import OpeningRequest
from jupyter_gpumarket.core.offer_meta import PREFIX
from jupyter_gpumarket.exceptions import LaunchStateConflict, PaymentError
from jupyter_gpumarket.provisioning.browser_lease import Pending, build_request

DEPOSIT = 2 * USD
FEE = 10_000
N = eip712.SECP256K1_N


def _offer(provider: str, relay_fee: int | None = FEE) -> Any:
    meta = "" if relay_fee is None else f"{PREFIX}relay_fee={relay_fee}"
    return SimpleNamespace(provider=provider, metadata=meta)


def _renter(c: Any, faucet: Any) -> Any:
    """A fresh wallet with tokens and gas (the 'browser' wallet)."""
    renter = Account.create()
    send(c.w3, faucet, c.token.functions.mint(renter.address, 10 * USD))
    c.w3.eth.send_transaction({"from": faucet.address, "to": renter.address, "value": 10**18})
    return renter


def _pending(chain: LeaseChain, req: OpeningRequest) -> tuple[Pending, Any]:
    loop = asyncio.new_event_loop()
    return Pending("k1", req, chain, loop, loop.create_future()), loop


def _answer(loop: Any, pending: Pending) -> Any:
    loop.run_until_complete(asyncio.sleep(0))
    return pending.future.result() if pending.future.done() else None


def _sigs(key: Any, req: OpeningRequest, **over: Any) -> dict[str, str]:
    """Sign (a variant of) ``req``'s OpenChannel and Permit with ``key``."""
    import dataclasses

    signed = dataclasses.replace(req, **over)
    open_typed, permit_typed = signed.open_channel_typed(), signed.permit_typed()
    assert open_typed is not None
    assert permit_typed is not None
    return {
        "open_sig": "0x" + eip712.sign_typed_data(key.key, open_typed).hex(),
        "permit_sig": "0x" + eip712.sign_typed_data(key.key, permit_typed).hex(),
    }


def _contract_accepts(c: Any, relayer: Any, req: OpeningRequest, body: dict[str, str]) -> bool:
    """Whether Escrow.openFor (as the provider relays it) takes these signatures."""
    p = bytes.fromhex(body["permit_sig"][2:]) if body.get("permit_sig") else b""
    v, r, s = (p[64], p[:32], p[32:64]) if p else (0, bytes(32), bytes(32))
    fn = c.escrow.functions.openFor(
        req.renter,
        req.provider,
        req.token,
        req.deposit,
        req.session_key,
        req.relay_fee,
        req.deadline,
        bytes.fromhex(body["open_sig"][2:]),
        v,
        r,
        s,
    )
    try:
        fn.call({"from": relayer.address})
    except Exception:
        return False
    return True


def _malleate(sig_hex: str) -> str:
    sig = bytes.fromhex(sig_hex[2:])
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    return "0x" + flipped.hex()


def test_signed_opening_checks_match_the_contract(contracts, accounts):
    c, faucet, provider = contracts, accounts[0], accounts[2]
    chain = LeaseChain(c)
    browser = _renter(c, faucet)
    key = Account.create()
    req = build_request(chain, browser.address, _offer(provider.address), DEPOSIT, key.address)
    assert req.relay_fee == FEE
    assert req.permit_nonce == 0
    ev = req.to_json()
    assert ev["methods"] == ["tx_hash", "typed_data"]
    assert ev["open_channel"]["domain"]["chainId"] == c.w3.eth.chain_id
    assert ev["channel_id"] == "0x" + eip712.channel_id_for(browser.address, key.address).hex()
    pending, loop = _pending(chain, req)
    stranger, other_key = Account.create(), Account.create()
    good = _sigs(browser, req)
    bad: dict[str, dict[str, str]] = {
        "forged (a stranger's key)": _sigs(stranger, req),
        "wrong chain id": _sigs(browser, req, chain_id=req.chain_id + 1),
        "wrong escrow": _sigs(browser, req, escrow=c.token.address),
        "wrong amount": _sigs(browser, req, deposit=DEPOSIT + 1),
        "wrong provider": _sigs(browser, req, provider=stranger.address),
        "wrong relay fee": _sigs(browser, req, relay_fee=FEE * 10),
        "later deadline": _sigs(browser, req, deadline=req.deadline + 1),
        "replay of another launch's opening": _sigs(browser, req, session_key=other_key.address),
        "high-s malleated": {**good, "open_sig": _malleate(good["open_sig"])},
        "v out of range": {**good, "open_sig": good["open_sig"][:-2] + "01"},
        "zero signature": {**good, "open_sig": "0x" + "00" * 65},
    }
    for name, body in bad.items():
        with pytest.raises(PaymentError):
            pending.submit(body)
        assert not _contract_accepts(c, provider, req, body), name
        assert _answer(loop, pending) is None, name  # the launch keeps waiting
    # a bad permit: refused while the allowance does not cover the deposit (as the escrow)
    bad_permit = {**good, "permit_sig": _sigs(stranger, req)["permit_sig"]}
    with pytest.raises(PaymentError, match="permit"):
        pending.submit(bad_permit)
    assert not _contract_accepts(c, provider, req, bad_permit)
    for body in ({"open_sig": good["open_sig"], "tx_hash": "0x" + "00" * 32}, {"x": 1}, []):
        with pytest.raises(PaymentError):
            pending.submit(body)
    assert _contract_accepts(c, provider, req, good)
    assert pending.submit(good)["accepted"] is True
    signed, permit_ok = _answer(loop, pending)
    assert permit_ok is True
    assert signed.open_sig == bytes.fromhex(good["open_sig"][2:])
    with pytest.raises(LaunchStateConflict):  # answered once: nothing more is taken
        pending.submit(good)
    loop.close()


def test_an_expired_opening_is_refused_like_the_contract(contracts, accounts, w3):
    c, faucet, provider = contracts, accounts[0], accounts[2]
    chain = LeaseChain(c)
    browser = _renter(c, faucet)
    req = build_request(
        chain, browser.address, _offer(provider.address), DEPOSIT, Account.create().address
    )
    good = _sigs(browser, req)
    w3.provider.make_request("evm_increaseTime", [req.deadline - chain.now() + 5])
    w3.provider.make_request("evm_mine", [])
    pending, loop = _pending(chain, req)
    with pytest.raises(PaymentError, match="deadline"):
        pending.submit(good)
    assert not _contract_accepts(c, provider, req, good)
    loop.close()


def _send_open(c: Any, wallet: Any, req: OpeningRequest, **over: Any) -> str:
    """What the browser does itself: approve + Escrow.open; the open's tx hash."""
    deposit = over.get("deposit", req.deposit)
    send(c.w3, wallet, c.token.functions.approve(c.escrow.address, deposit))
    fn = c.escrow.functions.open(
        over.get("provider", req.provider), c.token.address, deposit, req.session_key
    )
    receipt = send(c.w3, wallet, fn)
    return "0x" + bytes(receipt["transactionHash"]).hex()


def test_a_browser_sent_opening_is_checked_on_chain(contracts, accounts):
    c, faucet, provider = contracts, accounts[0], accounts[2]
    chain = LeaseChain(c)
    browser = _renter(c, faucet)
    other = _renter(c, faucet)
    offer = _offer(provider.address, relay_fee=None)
    req = build_request(chain, browser.address, offer, DEPOSIT, Account.create().address)
    assert req.to_json()["methods"] == ["tx_hash"]
    pending, loop = _pending(chain, req)
    # another wallet opened it (same session key): not the connected wallet's channel
    with pytest.raises(PaymentError, match="sent by"):
        pending.submit({"tx_hash": _send_open(c, other, req)})
    # an approve's hash, not the opening
    r = send(c.w3, browser, c.token.functions.approve(c.escrow.address, 1))
    with pytest.raises(PaymentError, match="escrow"):
        pending.submit({"tx_hash": "0x" + bytes(r["transactionHash"]).hex()})
    # replay: an earlier launch's opening (another session key) proves nothing for this one
    earlier = build_request(chain, browser.address, offer, DEPOSIT, Account.create().address)
    with pytest.raises(PaymentError, match="not the one asked for"):
        pending.submit({"tx_hash": _send_open(c, browser, earlier)})
    assert _answer(loop, pending) is None
    loop.close()
    for wrong in ({"deposit": DEPOSIT - 1}, {"provider": other.address}):
        req2 = build_request(chain, browser.address, offer, DEPOSIT, Account.create().address)
        pending2, loop2 = _pending(chain, req2)
        with pytest.raises(PaymentError, match="not the one asked for"):
            pending2.submit({"tx_hash": _send_open(c, browser, req2, **wrong)})
        assert _answer(loop2, pending2) is None
        loop2.close()
    req3 = build_request(chain, browser.address, offer, DEPOSIT, Account.create().address)
    pending3, loop3 = _pending(chain, req3)
    pending3.submit({"tx_hash": _send_open(c, browser, req3)})
    _signed, receipt = _answer(loop3, pending3)
    assert receipt["status"] == 1
    info = chain.channel(req3.channel_id)
    assert (info.state, info.renter, info.deposit) == ("open", browser.address, DEPOSIT)
    loop3.close()


def test_the_transactions_shown_open_the_asked_channel(contracts, accounts):
    """The calldata in the ``sign`` event, sent as is, opens exactly the channel asked for."""
    c, faucet, provider = contracts, accounts[0], accounts[2]
    chain = LeaseChain(c)
    browser = _renter(c, faucet)
    req = build_request(chain, browser.address, _offer(provider.address), DEPOSIT, browser.address)
    for tx in req.to_json()["transactions"]:
        signed = browser.sign_transaction(
            {
                "to": tx["to"],
                "data": tx["data"],
                "gas": 400_000,
                "gasPrice": c.w3.eth.gas_price,
                "nonce": c.w3.eth.get_transaction_count(browser.address),
                "chainId": c.w3.eth.chain_id,
            }
        )
        h = c.w3.eth.send_raw_transaction(signed.raw_transaction)
        assert c.w3.eth.wait_for_transaction_receipt(h)["status"] == 1
    pending, loop = _pending(chain, req)
    pending.submit({"tx_hash": "0x" + bytes(h).hex()})
    assert _answer(loop, pending) is not None
    loop.close()
