"""Registry: publish, update, deactivate offers; cost rounding equals core.money.cost."""

from __future__ import annotations

from chain_helpers import USD, reverts

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.core.money import cost

FPR = b"\x11" * 32


def _offer(token, price=1_850_000):
    return (
        "wss://gpu.example:8443",
        FPR,
        "H100-80GB",
        1,
        81_920,
        price,
        token,
        "eu-west",
        "ipfs://x",
    )


def test_register_update_deactivate(contracts, accounts):
    c, provider = contracts, accounts[2]
    receipt = send(c.w3, provider, c.registry.functions.register(*_offer(c.token.address)))
    (event,) = c.registry.events.OfferRegistered().process_receipt(receipt)
    offer_id = event["args"]["offer_id"]
    assert offer_id == 1
    offer = c.registry.functions.offers(offer_id).call()
    assert offer[0] == provider.address
    assert offer[3] == "H100-80GB"
    assert offer[-1] is True
    send(c.w3, provider, c.registry.functions.update(offer_id, *_offer(c.token.address, 2 * USD)))
    assert c.registry.functions.offers(offer_id).call()[6] == 2 * USD
    with reverts("registry: not your offer"):
        send(c.w3, accounts[1], c.registry.functions.deactivate(offer_id))
    send(c.w3, provider, c.registry.functions.deactivate(offer_id))
    assert c.registry.functions.offers(offer_id).call()[-1] is False
    with reverts("already inactive"):
        send(c.w3, provider, c.registry.functions.deactivate(offer_id))


def test_register_refuses_bad_offers(contracts, accounts):
    c = contracts
    with reverts("price_per_hour is zero"):
        send(c.w3, accounts[2], c.registry.functions.register(*_offer(c.token.address, 0)))


def test_contract_cost_equals_python_cost(contracts):
    for price, seconds in [(1_850_000, 1), (3_990_000, 7), (10**20 + 7, 12_345), (1, 3599)]:
        assert contracts.registry.functions.cost(price, seconds).call() == cost(price, seconds)
