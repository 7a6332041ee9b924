import pytest
from eth_account import Account

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.grant_code import GrantCode, issue_grant
from jupyter_gpumarket.exceptions import ConfigError

ESCROW = "0x" + "ee" * 20
DOMAIN = eip712.Domain(chain_id=31337, verifying_contract=ESCROW)


def _code(**kw):
    admin, student = Account.create(), Account.create()
    args = {"pool_id": b"\x07" * 32, "student": student.address, "cap": 5_000_000, "expiry": 99}
    return issue_grant(admin.key, DOMAIN, **{**args, **kw}), admin, student


def test_round_trip_and_the_signature_is_the_admins():
    grant, admin, student = _code()
    text = grant.encode()
    assert text.startswith("gpmgrant1.")
    assert "=" not in text
    back = GrantCode.decode(text)
    assert back == grant
    typed = eip712.grant(
        DOMAIN,
        pool_id=b"\x07" * 32,
        student=student.address,
        cap=5_000_000,
        expiry=99,
        provider=back.provider,
    )
    assert eip712.recover_signer(typed, bytes.fromhex(back.signature[2:])) == admin.address
    assert back.any_provider


@pytest.mark.parametrize(
    "text",
    ["", "hello", "gpmgrant1.", "gpmgrant1.!!!", "gpmgrant1.e30", "gpmgrant1.W10"],
)
def test_damaged_codes_say_so(text):
    with pytest.raises(ConfigError, match="grant code"):
        GrantCode.decode(text)


def test_a_truncated_code_is_damaged_not_a_crash():
    grant, _, _ = _code()
    with pytest.raises(ConfigError, match="damaged"):
        GrantCode.decode(grant.encode()[:-10])


def test_check_for_names_the_mismatch():
    grant, _, student = _code(provider="0x" + "ab" * 20)
    ok = {"chain_id": 31337, "escrow": ESCROW, "student": student.address}
    grant.check_for(**ok, provider="0x" + "AB" * 20)
    with pytest.raises(ConfigError, match="not the selected network"):
        grant.check_for(**{**ok, "chain_id": 1}, provider="0x" + "ab" * 20)
    with pytest.raises(ConfigError, match="for wallet"):
        grant.check_for(**{**ok, "student": "0x" + "11" * 20}, provider="0x" + "ab" * 20)
    with pytest.raises(ConfigError, match="pays only provider"):
        grant.check_for(**ok, provider="0x" + "cd" * 20)
