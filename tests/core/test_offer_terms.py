import dataclasses

import pytest

from jupyter_gpumarket.core.offer_terms import (
    OfferAction,
    OfferHome,
    OfferOnChain,
    OfferPlan,
    PublishedTerms,
    RememberedOffer,
    plan_offer,
)
from jupyter_gpumarket.exceptions import ConfigError

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
REGISTRY = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
ME = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
SOMEONE = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
FP = "sha256:" + "ab" * 32
HOME = OfferHome(31337, REGISTRY, ME)
TERMS = PublishedTerms(
    endpoint="wss://127.0.0.1:8765",
    tls_fingerprint=FP,
    gpu_model="NVIDIA H100",
    gpu_count=1,
    vram_mb=81559,
    price_per_hour=1000,
    token=TOKEN,
    region="eu",
    metadata_uri="gpumarket:isolation=sandboxed;relay_fee=10000",
)


def _remembered(offer_id=7, home=HOME, terms=TERMS):
    return RememberedOffer(offer_id, home, terms)


def _chain(terms=TERMS, active=True, provider=ME):
    return OfferOnChain(provider.lower(), terms, active)


def test_nothing_remembered_registers():
    plan = plan_offer(TERMS, HOME, None, None)
    assert (plan.action, plan.offer_id) == (OfferAction.REGISTER, None)
    assert plan.summary(3) == "published offer 3 (no offer remembered)"


def test_same_terms_and_active_keeps_the_offer_without_a_transaction():
    plan = plan_offer(TERMS, HOME, _remembered(), _chain())
    assert (plan.action, plan.offer_id, plan.changes) == (OfferAction.KEEP, 7, ())
    assert plan.summary(7) == "offer 7 unchanged"


def test_a_new_price_updates_the_same_offer_and_says_what_changed():
    wanted = dataclasses.replace(TERMS, price_per_hour=2000)
    plan = plan_offer(wanted, HOME, _remembered(), _chain())
    assert (plan.action, plan.offer_id, plan.reactivate) == (OfferAction.UPDATE, 7, False)
    assert plan.changes == (("price", 1000, 2000),)
    assert plan.summary(7) == "updated offer 7: price 1000 -> 2000"


@pytest.mark.parametrize(
    ("field", "value", "label"),
    [
        ("endpoint", "wss://10.0.0.2:9000", "endpoint"),
        ("tls_fingerprint", "sha256:" + "cd" * 32, "fingerprint"),
        ("gpu_model", "NVIDIA A100", "model"),
        ("gpu_count", 2, "count"),
        ("vram_mb", 40960, "vram"),
        ("token", SOMEONE, "token"),
        ("region", "us", "region"),
        ("metadata_uri", "gpumarket:isolation=unsandboxed;relay_fee=10000", "metadata"),
    ],
)
def test_every_published_field_counts_as_a_change(field, value, label):
    wanted = dataclasses.replace(TERMS, **{field: value})
    plan = plan_offer(wanted, HOME, _remembered(), _chain())
    assert plan.action is OfferAction.UPDATE
    assert [c[0] for c in plan.changes] == [label]


def test_the_chain_not_the_file_is_compared():
    # The file says 1000 but someone (another run, a block explorer) set 1500 on chain.
    on_chain = _chain(dataclasses.replace(TERMS, price_per_hour=1500))
    plan = plan_offer(TERMS, HOME, _remembered(), on_chain)
    assert plan.changes == (("price", 1500, 1000),)


def test_a_deactivated_offer_is_reactivated_by_update_not_replaced():
    plan = plan_offer(TERMS, HOME, _remembered(), _chain(active=False))
    assert (plan.action, plan.offer_id, plan.reactivate) == (OfferAction.UPDATE, 7, True)
    assert plan.summary(7) == "reactivated offer 7"
    moved = dataclasses.replace(TERMS, endpoint="wss://127.0.0.1:9999")
    plan = plan_offer(moved, HOME, _remembered(), _chain(active=False))
    assert plan.summary(7) == (
        "reactivated offer 7: endpoint wss://127.0.0.1:8765 -> wss://127.0.0.1:9999"
    )


@pytest.mark.parametrize(
    "home",
    [
        OfferHome(8453, REGISTRY, ME),  # another chain
        OfferHome(31337, TOKEN, ME),  # another registry
        OfferHome(31337, REGISTRY, SOMEONE),  # another wallet
    ],
)
def test_an_offer_remembered_elsewhere_is_left_alone(home):
    plan = plan_offer(TERMS, HOME, _remembered(home=home), None)
    assert plan.action is OfferAction.REGISTER
    assert "another registry or wallet" in plan.reason


@pytest.mark.parametrize(
    "on_chain",
    [
        None,
        OfferOnChain("0x" + "00" * 20, None, False),  # chain reset: the id is unused
        _chain(provider=SOMEONE),  # chain reset: the id is someone else's now
    ],
)
def test_an_offer_that_is_not_ours_on_chain_is_not_updated(on_chain):
    plan = plan_offer(TERMS, HOME, _remembered(), on_chain)
    assert plan.action is OfferAction.REGISTER
    assert "not this wallet's" in plan.reason


def test_addresses_and_fingerprints_compare_case_insensitively():
    upper = dataclasses.replace(TERMS, token=TOKEN.lower(), tls_fingerprint=FP.upper())
    assert upper == TERMS
    assert OfferHome(31337, REGISTRY.lower(), ME.upper().replace("0X", "0x")) == HOME


def test_remembered_offer_round_trips_through_json():
    offer = _remembered()
    assert RememberedOffer.from_json(offer.to_json()) == offer


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("registry"), "lacks registry"),
        (lambda d: d.update(offer_id=0), "offer_id"),
        (lambda d: d.update(offer_id=True), "offer_id"),
        (lambda d: d.update(provider="me"), "provider is not a 0x address"),
        (lambda d: d["terms"].pop("region"), "lack region"),
        (lambda d: d["terms"].update(price_per_hour=0), "price_per_hour"),
        (lambda d: d["terms"].update(tls_fingerprint="sha256:ab"), "tls_fingerprint"),
        (lambda d: d["terms"].update(gpu_count=2**32), "gpu_count"),
        (lambda d: d["terms"].update(endpoint=""), "endpoint"),
    ],
)
def test_a_broken_offer_file_fails_naming_the_field(mutate, message):
    data = _remembered().to_json()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        RememberedOffer.from_json(data)


def test_from_registry_reads_the_getter_tuple():
    raw = (
        ME,
        TERMS.endpoint,
        bytes.fromhex("ab" * 32),
        TERMS.gpu_model,
        1,
        81559,
        1000,
        TOKEN,
        "eu",
        TERMS.metadata_uri,
        False,
    )
    assert OfferOnChain.from_registry(raw) == OfferOnChain(ME.lower(), TERMS, False)
    empty = ("0x" + "00" * 20, "", b"\0" * 32, "", 0, 0, 0, "0x" + "00" * 20, "", "", False)
    assert OfferOnChain.from_registry(empty).terms is None
    with pytest.raises(ConfigError, match="11"):
        OfferOnChain.from_registry(raw[:10])


def test_a_register_plan_has_no_id_and_the_others_have_one():
    with pytest.raises(ConfigError):
        OfferPlan(OfferAction.REGISTER, 3, "x")
    with pytest.raises(ConfigError):
        OfferPlan(OfferAction.KEEP, None, "x")
