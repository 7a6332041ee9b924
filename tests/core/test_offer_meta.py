import pytest

from jupyter_gpumarket.core.offer_meta import offer_metadata, parse_offer_metadata, relay_fee_of
from jupyter_gpumarket.exceptions import ConfigError


def test_round_trip_and_the_old_isolation_label_still_reads():
    meta = offer_metadata(isolation="sandboxed", relay_fee=10_000)
    assert meta == "gpumarket:isolation=sandboxed;relay_fee=10000"
    assert parse_offer_metadata(meta) == {"isolation": "sandboxed", "relay_fee": "10000"}
    assert relay_fee_of(meta) == 10_000
    assert parse_offer_metadata("gpumarket:isolation=unsandboxed") == {"isolation": "unsandboxed"}
    assert relay_fee_of("gpumarket:isolation=unsandboxed") is None


@pytest.mark.parametrize("meta", ["", "ipfs://Qm...", "gpumarket:relay_fee=-5", "gpumarket:;;=x"])
def test_foreign_or_broken_metadata_gives_no_relay_fee(meta):
    assert relay_fee_of(meta) is None


def test_values_cannot_smuggle_keys():
    with pytest.raises(ConfigError, match="plain text"):
        offer_metadata(isolation="sandboxed;relay_fee=0")
