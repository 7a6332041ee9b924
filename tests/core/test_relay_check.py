import dataclasses

import pytest

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.relay_check import relay_refusal
from jupyter_gpumarket.exceptions import ProtocolError

PROVIDER, TOKEN = "0x" + "aa" * 20, "0x" + "bb" * 20
SIG = "0x" + "11" * 65
TERMS = {
    "provider": PROVIDER,
    "token": TOKEN,
    "relay_fee": 10_000,
    "price_per_hour": 3_600_000,
    "interval": 15,
    "now": 1_000,
}


def _req(**kw):
    base = {
        "renter": "0x" + "cc" * 20,
        "provider": PROVIDER,
        "token": TOKEN,
        "deposit": 1_000_000,
        "session_key": "0x" + "dd" * 20,
        "relay_fee": 10_000,
        "deadline": 5_000,
        "open_sig": SIG,
        "permit": SIG,
    }
    return paymsgs.RelayOpen(**{**base, **kw})


def test_a_good_request_is_relayed_and_survives_the_wire():
    req = _req()
    assert relay_refusal(req, **TERMS) is None
    assert control.parse_first(control.dump(req)) == req
    assert isinstance(control.parse_first(control.dump(control.Hello(token="t"))), control.Hello)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"provider": "0x" + "ee" * 20}, "pays provider"),
        ({"token": "0x" + "ee" * 20}, "paid in"),
        ({"relay_fee": 9_999}, "below this provider's"),
        ({"relay_fee": 100_001}, "above a tenth of the deposit"),  # the escrow's limit
        ({"deposit": 24_999}, "one voucher interval"),
        ({"deadline": 1_029}, "expire too soon"),
    ],
)
def test_refusals_say_what_is_wrong(change, reason):
    got = relay_refusal(_req(**change), **TERMS)
    assert got is not None
    assert reason in got


def test_a_pool_opening_may_use_the_pools_token():
    req = _req(token="0x" + "ee" * 20, permit="", grant="gpmgrant1.x")
    assert relay_refusal(req, **TERMS) is None


@pytest.mark.parametrize(
    "change",
    [
        {"relay_fee": 1_000_000},
        {"renter": "nope"},
        {"open_sig": "0x12"},
        {"permit": "0x12"},
        {"grant": "g" * 3000},
        {"deposit": -1},
        {"grant": "gpmgrant1.x"},  # with a permit too
    ],
)
def test_malformed_requests_are_protocol_errors(change):
    with pytest.raises(ProtocolError):
        _req(**change)


def test_unknown_first_messages_are_refused():
    with pytest.raises(ProtocolError, match="hello"):
        control.parse_first(b'{"op": "relay_result"}')
    with pytest.raises(ProtocolError):
        control.parse_first(b'{"op": "relay_open", "renter": 1}')
    assert dataclasses.is_dataclass(paymsgs.RelayResult("0x" + "00" * 32, "0x" + "00" * 32))
