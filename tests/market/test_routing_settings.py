"""Routing settings without a chain: the failover count, which launch failures move on to the
next offer, every older GPUMARKET_OFFER form still parsing, and endpoints a probe refuses."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_gpumarket.core.market_offer import MarketOffer, OfferQuery, Policy
from jupyter_gpumarket.core.offer_terms import PublishedTerms
from jupyter_gpumarket.exceptions import (
    AuthenticationFailed,
    ConfigError,
    KernelLaunchError,
    LinkLost,
    PaymentError,
    ProviderRefused,
    ProviderUnreachable,
    RpcUnavailable,
    WrongPassword,
)
from jupyter_gpumarket.market.probing import probe_offers
from jupyter_gpumarket.provisioning.failover import MAX_FAILOVER, parse_failover, retryable
from jupyter_gpumarket.provisioning.offers import parse_offer_spec


@pytest.mark.parametrize(("text", "want"), [("0", 0), ("2", 2), (" 3 ", 3), ("10", 10)])
def test_failover_counts(text: str, want: int) -> None:
    assert parse_failover(text) == want


@pytest.mark.parametrize("text", ["", "-1", "11", "2.5", "two", "\uff11", "9" * 40])
def test_bad_failover_counts_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ConfigError, match=f"0 to {MAX_FAILOVER}"):
        parse_failover(text)


@pytest.mark.parametrize(
    "exc",
    [
        ProviderUnreachable("x"),
        ProviderRefused("x"),
        AuthenticationFailed("x"),
        LinkLost("x"),
        KernelLaunchError("x"),
        PaymentError("the provider did not open the channel"),
        TimeoutError(),
        ConnectionResetError(),
    ],
)
def test_provider_failures_fail_over(exc: BaseException) -> None:
    assert retryable(exc)


@pytest.mark.parametrize(
    "exc", [ConfigError("x"), WrongPassword("x"), RpcUnavailable("x"), KeyboardInterrupt()]
)
def test_the_renters_own_failures_do_not(exc: BaseException) -> None:
    assert not retryable(exc)


@pytest.mark.parametrize(
    "spec",
    [
        "gpu=H100,max_price=2500000",
        "region=eu,max_price=4000000",
        "provider=0x" + "ab" * 20,
        "gpu=cpu",
        "policy=value,gpu=H100,min_vram=40000,verified=1",
    ],
)
def test_every_offer_filter_form_parses(spec: str) -> None:
    assert isinstance(parse_offer_spec(spec), OfferQuery)


def test_an_offer_id_stays_an_id() -> None:
    assert parse_offer_spec(" 7 ") == 7
    assert parse_offer_spec("sort=fastest").policy is Policy.FASTEST  # type: ignore[union-attr]


def _offer(oid: int, endpoint: str) -> MarketOffer:
    terms = PublishedTerms(
        endpoint=endpoint,
        tls_fingerprint="sha256:" + "11" * 32,
        gpu_model="CPU",
        gpu_count=0,
        vram_mb=0,
        price_per_hour=1,
        token="0x" + "ab" * 20,
        region="eu",
        metadata_uri="",
    )
    return MarketOffer(oid, "0x" + "cd" * 20, terms)


@pytest.mark.parametrize(
    "endpoint",
    [
        "\x1b[2Jnot a url",
        "ws://127.0.0.1:1/",
        "https://127.0.0.1/",
        "wss://",
        "wss://127.0.0.1:99999/",
        "wss://127.0.0.1:x/",
        "wss://127.0.0.1:1/\x00",
    ],
)
def test_endpoints_a_probe_refuses_are_unreachable_with_a_reason(endpoint: str) -> None:
    (result,) = asyncio.run(probe_offers([_offer(1, endpoint)], timeout=1.0)).values()
    assert not result.reachable
    assert result.reason


def test_a_closed_port_is_unreachable_fast() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    probes = asyncio.run(probe_offers([_offer(1, f"wss://127.0.0.1:{port}/")], timeout=2.0))
    assert not probes[1].reachable
