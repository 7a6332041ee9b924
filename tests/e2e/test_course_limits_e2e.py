"""Course limits against a real paid provider on a devnet, each from a student's fresh wallet
(no tokens, no gas) launching with GPUMARKET_GRANT: an expired course stops a running kernel at
the next voucher check; the cap's stop message speaks of course credit (and no rating tx is
tried from the gasless wallet); a student runs two kernels at once within one cap; a provider
whose offer is outside the course's published terms refuses the pool's opening itself."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from agentproc import environ
from marketproc import PRICE, Market, running_market

pytestmark = pytest.mark.slow

RELAY_FEE = 1_000


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with running_market(tmp_path_factory.mktemp("market"), "--relay-fee", str(RELAY_FEE)) as m:
        yield m


def _contracts(market: Market) -> Any:
    from jupyter_gpumarket.chain.client import Contracts, connect

    p = market.devnet.profile
    return Contracts.at(connect(p.rpc_url), *p.require_contracts())


def _course(market: Market, home: Path, name: str, **kw: Any) -> str:
    """A one-student course; the student's code."""
    from jupyter_gpumarket.chain.course import create_course, issue_codes
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.core.course import parse_roster

    c, admin = _contracts(market), dev_account(3)
    kw.setdefault("expires", int(time.time()) + 86_400)
    with environ({"GPUMARKET_HOME": str(home / "educator")}):
        course = create_course(c, admin, name=name, network=str(market.profile), **kw)
        _course, rows = issue_codes(c, admin, course, parse_roster("student\nAda\n"))
    return rows[0][2]


def _student(market: Market, home: Path, code: str, offer: str = "") -> dict[str, str]:
    from jupyter_gpumarket.market.course_join import join

    env = {
        "GPUMARKET_HOME": str(home / "ada"),
        "GPUMARKET_NETWORK": str(market.profile),
        "GPUMARKET_WALLET": str(home / "ada" / "wallet.json"),
        "GPUMARKET_WALLET_PASSWORD": "ada",
        "GPUMARKET_GRANT": code,
        "GPUMARKET_OFFER": offer,
        "GPUMARKET_BUDGET": "",
    }
    with environ(env):
        join(code, password="ada")
    return env


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


def test_an_expired_course_stops_a_running_kernel(market: Market, tmp_path: Path) -> None:
    expires = int(time.time()) + 45  # long enough to open; the kernel outlives it
    code = _course(
        market, tmp_path, "short-lab", budget=500_000, per_student=400_000, expires=expires
    )
    km, kc = _start(_student(market, tmp_path, code))
    try:
        assert time.time() < expires, "the kernel started after the course expired"
        kc.execute("import time; time.sleep(300)")
        out = _stream_until(kc, "the course credit expired", timeout=120)
    finally:
        _stop(km, kc)
    assert "the course credit expired" in out, out
    assert "ask your course's educator for a new code" in out, out


def test_the_cap_speaks_of_course_credit_and_is_not_rated(
    market: Market,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = _course(market, tmp_path, "cap-lab", budget=100_000, per_student=20_000)
    caplog.set_level(logging.INFO, logger="jupyter_gpumarket.market.attest")
    monkeypatch.setenv("GPUMARKET_ATTEST", "1")  # the renter rates leases it can pay gas for
    km, kc = _start(_student(market, tmp_path, code))
    try:
        kc.execute("import time; time.sleep(120)")
        out = _stream_until(kc, "the kernel is stopped", timeout=90)
    finally:
        _stop(km, kc)
    assert "your course credit for this kernel" in out, out
    assert "ask your course's educator for more credit" in out, out
    assert "larger budget" not in out, out
    deadline = time.monotonic() + 90  # the rating thread waits for the provider's settle
    while time.monotonic() < deadline and "lease on channel" not in caplog.text:
        time.sleep(0.5)
    assert "not rated: a course pool paid it" in caplog.text, caplog.text


def test_a_student_runs_two_kernels_within_one_cap(market: Market, tmp_path: Path) -> None:
    from jupyter_gpumarket.core.course import KERNEL_HOURS

    cap = PRICE * KERNEL_HOURS + 200_000  # one kernel's slice, and some left for a second
    code = _course(market, tmp_path, "two-lab", budget=cap, per_student=cap)
    env = _student(market, tmp_path, code)
    first = _start(env)
    try:
        second = _start(env)  # the whole cap in the first lease would leave it nothing
        try:
            second[1].execute("print(6 * 7)")
            assert "42" in _stream_until(second[1], "42", timeout=60)
        finally:
            _stop(*second)
    finally:
        _stop(*first)


def test_the_provider_refuses_an_offer_outside_the_course_terms(
    market: Market, tmp_path: Path
) -> None:
    from jupyter_gpumarket.exceptions import GpuMarketError

    code = _course(market, tmp_path, "a100-lab", budget=100_000, per_student=50_000, gpu="A100")
    # the student's side lists no offer for this course: name the CPU offer anyway
    env = _student(market, tmp_path, code, offer=market.renter_env["GPUMARKET_OFFER"])
    with pytest.raises(GpuMarketError, match="not the course's class A100"):
        _stop(*_start(env))
