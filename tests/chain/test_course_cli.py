"""`gpumarket course ...` on a devnet through the real command: an educator's course from a
roster, students joining with fresh wallets, revocation, the report against the chain, close."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from jupyter_gpumarket.core.claim_code import ClaimCode

PASSWORD = "course admin"
USD = 10**6


def _cli(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_gpumarket.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=180,
        check=False,
    )
    assert (out.returncode == 0) == ok, out.stderr + out.stdout
    return out


@pytest.mark.slow
def test_an_educator_runs_a_course_and_the_report_matches_the_chain(tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.client import Contracts, connect, send
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.devnet import start_devnet
    from jupyter_gpumarket.chain.keystore import create_keystore, load_account
    from jupyter_gpumarket.chain.leases import LeaseChain
    from jupyter_gpumarket.chain.relay import relay_request, submit_relay_request
    from jupyter_gpumarket.core import eip712

    with start_devnet(profile_path=tmp_path / "devnet.json") as devnet:
        admin, provider = dev_account(3), dev_account(2)
        create_keystore(PASSWORD, private_key=admin.key, path=tmp_path / "admin.json")
        edu = {
            "GPUMARKET_HOME": str(tmp_path / "educator"),
            "GPUMARKET_WALLET": str(tmp_path / "admin.json"),
            "GPUMARKET_WALLET_PASSWORD": PASSWORD,
        }
        net = ("--network", str(tmp_path / "devnet.json"))
        p = devnet.profile
        c = Contracts.at(connect(p.rpc_url), p.token, p.escrow, p.registry)
        start = c.token.functions.balanceOf(admin.address).call()
        out = _cli(edu, "course", "create", "cs101", "--budget", "30", "--per-student", "5",
                   "--expires", "2099-12-31", "--window", "Mon 10:00-12:00 Europe/Berlin",
                   *net).stdout  # fmt: skip
        assert "30.00 TUSD" in out
        roster = tmp_path / "roster.csv"
        roster.write_text("student,email\nAda,ada@uni.example\nBob,bob@uni.example\n=cmd,c@x\n")
        _cli(edu, "course", "codes", "cs101", "--students", str(roster),
             "--out", str(tmp_path / "codes.csv"), *net)  # fmt: skip
        with (tmp_path / "codes.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["student", "email", "code"]
        assert [r["student"] for r in rows] == ["Ada", "Bob", "'=cmd"]
        codes = {r["student"]: ClaimCode.decode(r["code"]) for r in rows}
        state = (tmp_path / "educator" / "courses" / "cs101.json").read_text()
        assert all(code.claim_secret[2:] not in state for code in codes.values())
        # issuing the same roster again is refused (no duplicate codes by accident)
        _cli(edu, "course", "codes", "cs101", "--students", str(roster),
             "--out", str(tmp_path / "again.csv"), *net, ok=False)  # fmt: skip

        # Ada joins: no wallet yet, no tokens, no gas
        ada_env = {"GPUMARKET_HOME": str(tmp_path / "ada"), "GPUMARKET_WALLET_PASSWORD": "ada"}
        joined = _cli(ada_env, "course", "join", rows[0]["code"], *net).stdout
        assert "(new)" in joined
        assert "Mon 10:00-12:00 Europe/Berlin" in joined
        ada = load_account("ada", tmp_path / "ada" / "wallet.json")
        # her first lease binds the code on chain (relayed: the provider pays the gas)
        chain = LeaseChain(c)
        session = Account.create()
        req = relay_request(chain, ada, provider=provider.address, deposit=2 * USD,
                            relay_fee=1000, session_key=session,
                            grant=codes["Ada"].ticket_for(ada.address))  # fmt: skip
        cid, _ = submit_relay_request(chain, provider, req)
        assert c.w3.eth.get_balance(ada.address) == 0
        # Ada's code, forwarded to Eve's fresh wallet: refused
        eve_env = {"GPUMARKET_HOME": str(tmp_path / "eve"), "GPUMARKET_WALLET_PASSWORD": "eve"}
        err = _cli(eve_env, "course", "join", rows[0]["code"], *net, ok=False).stderr
        assert "already redeemed by another wallet" in err

        _cli(edu, "course", "revoke", "cs101", "bob@uni.example", *net)
        _cli(edu, "course", "fund", "cs101", "1.5", *net)
        report = json.loads(_cli(edu, "course", "report", "cs101", "--json", *net).stdout)
        by = {r["student"]: r for r in report}
        assert by["Ada"]["address"] == ada.address
        assert by["Ada"]["leases"] == 1
        gh = codes["Ada"].grant_hash
        assert by["Ada"]["spent"] == c.escrow.functions.grant_spent(gh).call() == 2 * USD
        assert by["Ada"]["remaining"] == 3 * USD
        assert by["Bob"]["address"] == ""
        assert by["Bob"]["spent"] == 0
        csv_out = _cli(edu, "course", "report", "cs101", "--csv", *net).stdout
        assert csv_out.splitlines()[0] == "student,address,cap,spent,remaining,leases,seconds"

        # close while Ada's lease runs: the free balance returns now, her deposit is held
        out = _cli(edu, "course", "close", "cs101", "--wait", "0", *net).stdout
        assert "still held by running leases" in out
        paid = 700_000
        sig = eip712.sign_typed_data(
            session.key, eip712.voucher(eip712.Domain(p.chain_id, p.escrow), cid, paid)
        )
        send(c.w3, provider, c.escrow.functions.settle(cid, paid, sig))
        report = json.loads(_cli(edu, "course", "report", "cs101", "--json", *net).stdout)
        assert {r["student"]: r["spent"] for r in report}["Ada"] == paid + 1000  # + relay fee
        _cli(edu, "course", "close", "cs101", "--wait", "0", *net)
        pool = c.escrow.functions.pools(bytes.fromhex(codes["Ada"].pool_id[2:])).call()
        assert pool[2] == 0
        # everything but what the provider earned came back to the educator, to the base unit
        end = c.token.functions.balanceOf(admin.address).call()
        assert start - end == paid + 1000
