"""A provider cannot rate itself and ratings carry sane figures (issue 17, item 9); a renter's
reads of the Registry are bounded and an honest offer's TLS fingerprint cannot be copied by
another provider while it is active (items 12, 4).

Before: `attest` worked on a channel whose renter was its provider, with any TFLOPS; a
provider could register any number of offers (every renter's selection read them all, one call
each), including copies of another provider's endpoint + fingerprint."""

from __future__ import annotations

from chain_helpers import USD, open_channel, reverts, voucher_sig
from eth_account import Account

from jupyter_gpumarket.chain.client import send, send_value

MAX_ACTIVE, MAX_PAGE = 8, 50


def test_a_provider_cannot_attest_its_own_channel(any_chain, accounts):
    c, provider = any_chain, accounts[2]
    send(c.w3, accounts[0], c.token.functions.mint(provider.address, 10 * USD))
    cid, session = open_channel(c, provider, provider, 5 * USD)  # renter == provider
    send(c.w3, provider, c.escrow.functions.settle(cid, USD, voucher_sig(c, session, cid, USD)))
    with reverts("a provider cannot attest its own channel"):
        send(c.w3, provider, c.escrow.functions.attest(cid, 100, 5_000_00))


def test_attest_figures_are_bounded(any_chain, accounts):
    c, renter, provider = any_chain, accounts[1], accounts[2]
    cid, session = open_channel(c, renter, provider, 5 * USD)
    send(c.w3, provider, c.escrow.functions.settle(cid, 1, voucher_sig(c, session, cid, 1)))
    with reverts("measured_tflops_x100 above 20,000 TFLOPS"):
        send(c.w3, renter, c.escrow.functions.attest(cid, 100, 2**32 - 1))
    with reverts("score must be 0..100"):
        send(c.w3, renter, c.escrow.functions.attest(cid, 101, 100))
    send(c.w3, renter, c.escrow.functions.attest(cid, 100, 2_000_000))


def _offer(c, fingerprint: bytes, price: int = USD) -> tuple:
    return ("wss://gpu.example:8443", fingerprint, "H100", 1, 81_920, price, c.token.address,
            "eu", "")  # fmt: skip


def test_offers_per_provider_are_capped_and_read_a_page_at_a_time(any_chain, accounts):
    c, spammer = any_chain, accounts[3]
    r = c.registry.functions
    first = r.offer_count().call() + 1
    for i in range(MAX_ACTIVE):
        send(c.w3, spammer, r.register(*_offer(c, bytes([i + 1]) * 32, USD + i)))
    with reverts("at most 8 active offers"):
        send(c.w3, spammer, r.register(*_offer(c, b"\x77" * 32)))
    assert r.active_offers(spammer.address).call() == MAX_ACTIVE
    send(c.w3, spammer, r.deactivate(first))  # a slot frees when an offer goes
    send(c.w3, spammer, r.register(*_offer(c, b"\x77" * 32)))
    with reverts("at most 8 active offers"):  # and reactivating counts again
        send(c.w3, spammer, r.update(first, *_offer(c, b"\x01" * 32)))
    page = r.offersPage(first, 1000).call()
    assert len(page) == MAX_ACTIVE + 1 <= MAX_PAGE
    assert [o[6] for o in page[1:MAX_ACTIVE]] == [USD + i for i in range(1, MAX_ACTIVE)]
    assert page[0][10] is False
    assert page[-1][2] == b"\x77" * 32
    assert r.offersPage(first + 2, 2).call() == page[2:4]
    assert r.offersPage(0, 5).call() == []
    assert r.offersPage(first + 99, 5).call() == []


def test_an_active_offers_fingerprint_belongs_to_its_provider(any_chain, accounts):
    c, honest, copier = any_chain, accounts[2], accounts[3]
    r, fpr = c.registry.functions, b"\x42" * 32
    send(c.w3, honest, r.register(*_offer(c, fpr, 2 * USD)))
    honest_id = r.offer_count().call()
    with reverts("another provider's active offer uses this TLS fingerprint"):
        send(c.w3, copier, r.register(*_offer(c, fpr, 2 * USD - 1)))
    send(c.w3, copier, r.register(*_offer(c, b"\x43" * 32)))
    with reverts("another provider's active offer uses this TLS fingerprint"):
        send(c.w3, copier, r.update(r.offer_count().call(), *_offer(c, fpr, 1)))
    send(c.w3, honest, r.register(*_offer(c, fpr, 3 * USD)))  # its own second offer: fine
    assert r.fingerprint_provider(fpr).call() == honest.address
    send(c.w3, honest, r.deactivate(honest_id))
    send(c.w3, honest, r.deactivate(honest_id + 2))
    # every offer that used it is gone: the fingerprint is free (a moved machine, a new owner)
    send(c.w3, copier, r.register(*_offer(c, fpr)))
    with reverts("another provider's active offer uses this TLS fingerprint"):
        send(c.w3, honest, r.update(honest_id, *_offer(c, fpr, 2 * USD)))


def test_the_renters_offer_list_reads_pages(contracts, accounts):
    """provisioning.offers reads offersPage: every active offer across pages, none twice
    (the client's reading: anvil only)."""
    from jupyter_gpumarket.provisioning.offers import _offers

    c, count = contracts, MAX_PAGE + 3
    start = c.registry.functions.offer_count().call()
    providers = [Account.create() for _ in range(-(-count // MAX_ACTIVE))]
    for p in providers:
        send_value(c.w3, accounts[0], p.address, 10**17)
    for i in range(count):
        p = providers[i // MAX_ACTIVE]
        send(c.w3, p, c.registry.functions.register(*_offer(c, bytes.fromhex(f"{i + 1:064x}"))))
    got = [o.offer_id for o in _offers(c.registry)]
    assert got[-count:] == list(range(start + 1, start + count + 1))
