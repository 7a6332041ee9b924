"""A course end to end on a devnet with a real paid provider: an educator's course for three
students from a roster; two students with fresh wallets (no tokens, no gas) join with their
codes and run kernels at the same time from GPUMARKET_GRANT alone; the cap stops one cleanly
(warned at 80 %), revocation stops the other; a code forwarded to a second wallet is refused;
the course window is enforced; the report matches the chain to the base unit; closing the
course returns the rest to the educator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from agentproc import environ
from marketproc import PASSWORD, Market, running_market

pytestmark = pytest.mark.slow

CAP = 30_000  # base units: 29 s of kernel at 1,000 per second after a 1,000 relay fee
RELAY_FEE = 1_000


@pytest.fixture
def market(tmp_path: Path):
    with running_market(tmp_path, "--relay-fee", str(RELAY_FEE)) as m:
        yield m


def _contracts(market: Market) -> Any:
    from jupyter_gpumarket.chain.client import Contracts, connect

    p = market.devnet.profile
    return Contracts.at(connect(p.rpc_url), *p.require_contracts())


def _student_env(market: Market, tmp_path: Path, name: str, code: str) -> dict[str, str]:
    return {
        "GPUMARKET_HOME": str(tmp_path / name),
        "GPUMARKET_NETWORK": str(market.profile),
        "GPUMARKET_WALLET": str(tmp_path / name / "wallet.json"),
        "GPUMARKET_WALLET_PASSWORD": name,
        "GPUMARKET_GRANT": code,
        "GPUMARKET_OFFER": "",
        "GPUMARKET_BUDGET": "",
    }


def _start(env: dict[str, str]) -> tuple[KernelManager, Any]:
    km = KernelManager(kernel_name="gpumarket")
    with environ(env):
        km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def _stop(km: KernelManager, kc: Any) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def _stream_until(kc: Any, needle: str, timeout: float) -> str:
    """The kernel's stream output until ``needle`` shows (read from the client's queue, so
    notices that arrived before the kernel stopped are not missed)."""
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and needle not in "".join(texts):
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except Exception:  # queue.Empty
            continue
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
    return "".join(texts)


def _wait_closed(market: Market, cids: list[bytes], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(market.channel("0x" + c.hex()).state.startswith("closed") for c in cids):
            return
        time.sleep(0.5)
    raise AssertionError("the provider did not settle the course's channels")


def test_a_course_from_roster_to_close(market: Market, tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.client import send
    from jupyter_gpumarket.chain.course import (
        _pool_channels,
        close_course,
        course_report,
        create_course,
        issue_codes,
        revoke_student,
    )
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.core.claim_code import ClaimCode
    from jupyter_gpumarket.core.course import parse_roster
    from jupyter_gpumarket.exceptions import GpuMarketError, PaymentError
    from jupyter_gpumarket.market.course_join import join

    c, admin, provider = _contracts(market), dev_account(3), dev_account(1).address
    start_balance = c.token.functions.balanceOf(admin.address).call()
    provider_before = market.token_balance(provider)
    closed_window = "Mon 00:00-00:01 UTC; Tue 00:00-00:01 UTC"  # closed at nearly any time
    with environ({"GPUMARKET_HOME": str(tmp_path / "educator")}):
        course = create_course(
            c, admin, name="gpu-lab", network=str(market.profile), budget=100_000,
            per_student=CAP, expires=int(time.time()) + 86_400, window=closed_window,
        )  # fmt: skip
        roster = parse_roster("student,email\nAda,ada@x\nBob,bob@x\nCyd,cyd@x\n")
        course, rows = issue_codes(c, admin, course, roster)
    codes = {student: code for student, _email, code in rows}
    pool_id = bytes.fromhex(course.pool_id[2:])

    ada_env = _student_env(market, tmp_path, "ada", codes["Ada"])
    bob_env = _student_env(market, tmp_path, "bob", codes["Bob"])
    with environ(ada_env):
        ada = join(codes["Ada"], password="ada")
    with environ(bob_env):
        bob = join(codes["Bob"], password="bob")
    assert ada.created
    assert bob.created
    assert [o["provider"].lower() for o in ada.offers] == [provider.lower()]

    # outside the window nothing opens (checked before any deposit moves)
    if course_window_open(closed_window):
        pytest.skip("the test ran in the one minute its closed window is open")
    with pytest.raises(GpuMarketError, match="outside the course's time window"):
        _start(ada_env)
    send(c.w3, admin, c.escrow.functions.setPoolTerms(pool_id, '{"window":""}'))

    # both students run kernels at the same time, paid by the course, gasless
    ada_km, ada_kc = _start(ada_env)
    bob_km, bob_kc = _start(bob_env)
    try:
        for w in (ada.wallet, bob.wallet):
            assert c.w3.eth.get_balance(w) == 0
            assert c.token.functions.balanceOf(w).call() == 0
        bob_kc.execute("import time; time.sleep(90)")  # Bob runs into his cap
        ada_kc.execute("import time; time.sleep(90)")  # Ada gets revoked while it runs
        with environ({"GPUMARKET_HOME": str(tmp_path / "educator")}):
            revoke_student(c, admin, course, "Ada")
        ada_out = _stream_until(ada_kc, "revoked", timeout=40)
        bob_out = _stream_until(bob_kc, "the kernel is stopped", timeout=60)
    finally:
        _stop(ada_km, ada_kc)
        _stop(bob_km, bob_kc)
    assert "revoked" in ada_out, ada_out
    # the code forwarded to a second wallet is refused (Ada's first lease bound it)
    eve_env = _student_env(market, tmp_path, "eve", codes["Ada"])
    refused = pytest.raises(PaymentError, match="already redeemed by another wallet")
    with environ(eve_env), refused:
        join(codes["Ada"], password="eve")
    assert "80 %" in bob_out, bob_out
    assert "is used up: the kernel is stopped" in bob_out, bob_out

    cids = [cid for cid, _g, _b in _pool_channels(c, course)]
    assert len(cids) == 2
    _wait_closed(market, cids)
    rows_by = {r.student: r for r in course_report(c, course)}
    for name, joined in (("Ada", ada), ("Bob", bob)):
        gh = ClaimCode.decode(codes[name]).grant_hash
        assert rows_by[name].address == joined.wallet
        assert rows_by[name].spent == c.escrow.functions.grant_spent(gh).call()
        assert rows_by[name].leases == 1
        assert rows_by[name].seconds > 0
    assert rows_by["Bob"].spent <= CAP
    assert rows_by["Cyd"].address == ""
    assert rows_by["Cyd"].spent == 0
    earned = market.token_balance(provider) - provider_before
    assert sum(r.spent for r in rows_by.values()) == earned  # every base unit accounted for

    with environ({"GPUMARKET_HOME": str(tmp_path / "educator")}):
        _course, withdrawn, held = close_course(c, admin, course, progress=lambda _t: None)
    assert held == 0
    assert withdrawn == 100_000 - earned
    assert c.token.functions.balanceOf(admin.address).call() == start_balance - earned
    assert PASSWORD  # the market's own wallets are untouched by the course


def course_window_open(text: str) -> bool:
    from jupyter_gpumarket.core.course_window import parse_window

    return parse_window(text).open_at(int(time.time()))
