"""The GPUMARKET_OFFER grammar, and the market's offer and probe types built from hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core.market_offer import (
    Constraints,
    MarketOffer,
    OfferQuery,
    Policy,
    ProbeResult,
)
from jupyter_gpumarket.core.offer_filter import parse_offer_filter
from jupyter_gpumarket.core.verification import Level
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

ADDR = "0x" + "12" * 20


def test_an_offer_id():
    assert parse_offer_filter(" 7 ") == 7


def test_the_issue_example():
    q = parse_offer_filter("policy=value,gpu=H100,min_vram=40000,verified=1")
    assert q == OfferQuery(
        Policy.VALUE, Constraints(gpu="H100", min_vram_mib=40000, min_level=Level.DETECTED)
    )


def test_every_key():
    q = parse_offer_filter(
        "sort=fastest, gpu=H100 PCIe, max_price=2500000, region=eu, level=challenged, "
        f"provider={ADDR}, verified=0"
    )
    assert q.policy is Policy.FASTEST
    c = q.constraints
    assert (c.gpu, c.max_price, c.region, c.min_level, c.provider) == (
        "H100 PCIe",
        2_500_000,
        "eu",
        Level.CHALLENGED,
        ADDR,
    )
    assert parse_offer_filter("gpu=L4").policy is Policy.CHEAPEST


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("gpus=H100", "key 'gpus' is not understood"),
        ("H100", "'H100' (not key=value) is not understood"),
        ("policy=best", "policy: unknown policy 'best'"),
        ("min_vram=40GB", "min_vram='40GB' must be a whole number"),
        ("max_price=-1", "max_price='-1' must be a whole number"),
        ("min_vram=٤٠", "min_vram="),  # non-ASCII digits are not numbers here
        ("verified=maybe", "verified='maybe' must be 1 or 0"),
        ("level=gold", "level: unknown verification level"),
        ("level=mismatch", "cannot be asked for"),
        ("provider=bob", "provider='bob' must be a 0x address"),
        ("gpu=H100,gpu=A100", "gpu is given twice"),
        ("policy=value,sort=cheapest", "sort is given twice"),
        ("gpu=", "gpu= needs a value"),
        ("gpu=" + "x" * 200, "gpu= needs a value of 1 to 128"),
        ("x" * 600, "at most 512"),
        (",".join(["gpu=H100"] * 20), "at most 16"),
        ("", "empty"),
        ("0", "start at 1"),
    ],
)
def test_errors_name_the_bad_key(text, words):
    with pytest.raises(ConfigError) as info:
        parse_offer_filter(text)
    assert words in str(info.value)
    assert "GPUMARKET_OFFER" in str(info.value)


@given(st.text(max_size=600))
def test_any_text_parses_or_raises_config_error(text):
    with contextlib.suppress(ConfigError):
        parse_offer_filter(text)


RAW = (
    ADDR,
    "wss://10.0.0.1:8443",
    bytes(32),
    "NVIDIA H100 80GB HBM3",
    1,
    81559,
    2_000_000,
    "0x" + "ab" * 20,
    "eu-west",
    "gpumarket:isolation=sandboxed;simulated=1",
    True,
)


def test_market_offer_from_the_registry_tuple():
    o = MarketOffer.from_registry(3, RAW)
    assert o.gpu_class.name == "H100 SXM"
    assert o.simulated
    assert o.sandboxed
    assert o.claim.describe() == "1x H100 SXM"
    assert MarketOffer.from_registry(4, ("0x" + "00" * 20, *RAW[1:])) is None
    with pytest.raises(ConfigError):
        MarketOffer(0, ADDR, o.terms)


def test_probe_reply_parsing_refuses_hostile_replies():
    good = {
        "free_kernels": 3,
        "free_gpus": 1,
        "sandboxed": True,
        "inventory": {
            "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 85520809984}]
        },
        "extra": "ignored",
    }
    p = ProbeResult.from_reply(3, good, 12.5)
    assert p.detected.vram_mib == (81559,)
    assert p.reachable
    for bad in (
        [],
        {"free_kernels": -1},
        {"free_kernels": "3"},
        {"free_gpus": 2**40},
        {"sandboxed": "yes"},
        {"inventory": {"gpus": "many"}},
        {"free_kernels": True},
    ):
        with pytest.raises(ProtocolError):
            ProbeResult.from_reply(3, bad, 1.0)
    with pytest.raises(ConfigError):
        ProbeResult.from_reply(3, {}, float("nan"))
    down = ProbeResult.unreachable(3, "x" * 10_000)
    assert len(down.reason) == 200
    with pytest.raises(ConfigError, match="needs a reason"):
        ProbeResult(3, False)
