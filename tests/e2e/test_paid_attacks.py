"""Attacks on a real paid provider (devnet + agent process on loopback): channels that are not
money, signatures the escrow refuses, one channel holding every slot, challenge floods, an offer
that copies another provider's endpoint. Each test performs the attack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paidclient import (
    WORTHLESS_TOKEN,
    Linked,
    Refused,
    challenge_only,
    contracts,
    deploy_source,
    malleate,
    open_channel,
    paid_hello,
)

from agentproc import environ
from marketproc import Market, leases_json, running_market, stream_text_until_dead

pytestmark = pytest.mark.slow

INTERVAL_DEPOSIT = 2_000  # marketproc's price (1,000/s) x its 2 s voucher interval


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with running_market(
        tmp_path_factory.mktemp("attacks"), "--max-kernels", "8", "--client-grace", "3"
    ) as m:
        yield m


def _dev(i: int) -> Any:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    return dev_account(i)


def _provider() -> str:
    return str(_dev(1).address)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _hello(market: Market, cid: bytes, key: Any, **kw: Any) -> Linked | Refused:
    async with paid_hello(market.ready["url"], cid, key, **kw) as got:
        return got


# -- 17.1: a channel in a token that is not the offer's ---------------------------------------


def _foreign_token_channels(market: Market, renter: Any) -> tuple[list[tuple], list[str]]:
    """Channels to this provider whose deposit is not in the offer's token, made whichever
    way this escrow allows: ([(channel id, session key, how)], [why the escrow refused])."""
    from jupyter_gpumarket.chain.client import deploy, send
    from jupyter_gpumarket.exceptions import ChainError

    profile = market.devnet.profile
    c = contracts(profile)
    other = c.w3.eth.contract(address=deploy(c.w3, _dev(0), "TestUSD"), abi=c.token.abi)
    send(c.w3, _dev(0), other.functions.mint(renter.address, 10**9), what="mint")
    fakes = [
        ("worthless", deploy_source(profile, renter, WORTHLESS_TOKEN)),
        ("real ERC-20, not the offer's", other),
    ]
    opened, refused = [], []
    for how, token in fakes:
        try:
            if any(f.get("name") == "addToken" for f in c.escrow.abi):  # anyone could list one
                send(c.w3, renter, c.escrow.functions.addToken(token.address), what="addToken")
            opened.append((*open_channel(profile, renter, _provider(), 10**8, token=token), how))
        except ChainError as exc:  # this escrow holds one token: the contract's own guard
            refused.append(f"{how}: {exc}")
    return opened, refused


def test_a_channel_in_a_worthless_or_foreign_token_is_refused_at_the_hello(market: Market):
    """Whichever foreign-token channel the escrow lets a renter open, the agent refuses it at
    the hello. (An escrow of one token refuses to open them at all: then that refusal is what
    is checked here, and the agent's own check is in tests/core/test_channel_checks.py.)"""
    opened, refused = _foreign_token_channels(market, _dev(4))
    assert len(opened) + len(refused) == 2
    for cid, key, how in opened:
        got = _run(_hello(market, cid, key))
        assert isinstance(got, Refused), f"the agent served a channel in a {how} token"
        assert got.reason.startswith("not the offer's token")
    for why in refused:
        assert "revert" in why.lower() or "token" in why.lower(), why


def test_an_agent_refuses_to_serve_an_offer_in_a_token_its_escrow_does_not_hold(
    market: Market, tmp_path: Path
):
    """An agent whose offer would be paid in another token than the escrow's never serves: it
    refuses at start-up, before registering or accepting a hello, and says which token to set.
    (A channel in another token than a running agent's offer is refused at the hello: see
    test_a_channel_in_a_worthless_or_foreign_token_is_refused_at_the_hello and
    tests/core/test_channel_checks.py.)"""
    from jupyter_gpumarket.chain.client import deploy
    from jupyter_gpumarket.chain.keystore import create_keystore

    from marketproc import PASSWORD, PRICE

    c = contracts(market.devnet.profile)
    offer_token = deploy(c.w3, _dev(0), "TestUSD")
    profile = json.loads(market.profile.read_text())
    escrow_token = profile["contracts"]["token"]
    profile["contracts"]["token"] = offer_token
    (tmp_path / "other.json").write_text(json.dumps(profile))
    create_keystore(PASSWORD, private_key=_dev(3).key, path=tmp_path / "p3.json")
    ready = tmp_path / "ready3.json"
    cmd = [
        sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve",
        "--network", str(tmp_path / "other.json"), "--wallet", str(tmp_path / "p3.json"),
        "--price-per-hour", str(PRICE), "--region", "elsewhere", "--state-dir",
        str(tmp_path / "p3"), "--ready-file", str(ready), "--voucher-interval", "2",
        "--sandbox", "off", "--unsafe-no-sandbox",
    ]  # fmt: skip
    env = {**os.environ, "GPUMARKET_HOME": str(market.home), "GPUMARKET_WALLET_PASSWORD": PASSWORD}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode != 0, f"the agent served an offer in a token not its escrow's: {out}"
    assert not ready.exists(), out
    assert f"takes the token {escrow_token}" in out, out
    assert f"profile names the token {offer_token}" in out, out
    assert f"--token {escrow_token}" in out, out


# -- 17.3: signatures the escrow refuses are refused by the agent ------------------------------


@pytest.mark.parametrize("how", ["high-s", "v-27", "v+4", "zero-s"])
def test_a_malleated_hello_answer_is_refused(market: Market, how: str):
    cid, key = open_channel(market.devnet.profile, _dev(5), _provider(), 10**6)
    got = _run(_hello(market, cid, key, answer=lambda sig: malleate(sig, how)))
    assert isinstance(got, Refused), f"a {how} answer opened a lease"
    assert "unreadable" in got.reason or "signature" in got.reason


def test_a_malleated_voucher_is_refused_and_never_stored(market: Market):
    from jupyter_gpumarket.core import eip712, paymsgs

    profile = market.devnet.profile
    cid, key = open_channel(profile, _dev(6), _provider(), 10**6)
    domain = eip712.Domain(profile.chain_id, profile.require_contracts()[1])

    async def attack() -> list[Any]:
        async with paid_hello(market.ready["url"], cid, key) as link:
            assert isinstance(link, Linked), link
            replies = []
            for i, how in enumerate(("high-s", "v-27", "v+4")):
                sig = eip712.sign_typed_data(key.key, eip712.voucher(domain, cid, 100 + i))
                bad = malleate(sig, how)
                await link.send_agent(paymsgs.Voucher(amount=100 + i, signature="0x" + bad.hex()))
                async for msg in link.agent_messages(timeout=5):
                    replies.append(msg)
                    break
            return replies

    replies = _run(attack())
    assert len(replies) == 3
    for msg in replies:
        assert isinstance(msg, paymsgs.PaymentNotice), f"a malleated voucher was acked: {msg}"
        assert "refused" in msg.message


# -- 17.2: the channel changes under a running lease ------------------------------------------


def test_a_channel_changed_under_a_running_lease_stops_its_kernel(market: Market):
    """The renter asks to close the channel (requestClose) while its kernel runs: the agent
    notices on its next read of the channel, refuses further vouchers, stops the kernel saying
    why and settles with the best voucher the escrow still accepts (a closing channel's
    vouchers still redeem). It used to keep serving on a channel that was going away."""
    from jupyter_client.manager import KernelManager

    from jupyter_gpumarket.chain.client import send

    c = contracts(market.devnet.profile)
    env = {**market.renter_env, "GPUMARKET_OFFER": str(market.ready["offer_id"])}
    known = {lease["channel_id"] for lease in leases_json(env)}
    km = KernelManager(kernel_name="gpumarket")
    with environ(env):
        km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        (lease,) = [x for x in leases_json(env) if x["channel_id"] not in known]
        cid = bytes.fromhex(lease["channel_id"][2:])
        time.sleep(3)  # a voucher or two is accepted first
        send(c.w3, _dev(2), c.escrow.functions.requestClose(cid), what="requestClose")
        joined = stream_text_until_dead(km, kc, timeout=40)
        assert not km.is_alive(), "the kernel kept running after requestClose"
        assert "asked to close" in joined
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    deadline = time.monotonic() + 30
    while not market.channel(lease["channel_id"]).state.startswith("closed"):
        assert time.monotonic() < deadline, "the provider did not settle"
        time.sleep(0.5)
    # vouchers stay valid while closing: the provider is paid
    assert market.channel(lease["channel_id"]).redeemed > 0


# -- 16.8: one channel, one lease; no kernel, no slot -----------------------------------------


def test_one_small_channel_cannot_hold_every_slot(market: Market):
    """A channel with one voucher interval of deposit: a second hello without a lease id is
    refused (it used to take another slot), and the lease that never starts a kernel ends
    after the payment grace (8 s here) instead of holding its slot."""
    cid, key = open_channel(market.devnet.profile, _dev(7), _provider(), INTERVAL_DEPOSIT)

    async def attack() -> tuple[Any, Any, float | None]:
        async with paid_hello(market.ready["url"], cid, key) as first:
            assert isinstance(first, Linked), first
            second = await _hello(market, cid, key)
            if isinstance(second, Linked):
                await second.ws.close()
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(first.ws.wait_closed(), 40)
                ended_after = time.monotonic() - t0
            except TimeoutError:
                ended_after = None
            return first, second, ended_after

    _first, second, ended_after = _run(attack())
    assert isinstance(second, Refused), "a second lease was opened on the same channel"
    assert "already pays for a lease" in second.reason
    assert ended_after is not None, "a lease without a kernel kept its slot"
    too_small = open_channel(market.devnet.profile, _dev(7), _provider(), INTERVAL_DEPOSIT - 1)
    got = _run(_hello(market, *too_small))
    assert isinstance(got, Refused)
    assert "less than one voucher interval" in got.reason


# -- 16.9: a flood of unauthenticated hellos locks nobody out ----------------------------------


def test_a_challenge_flood_from_one_address_does_not_lock_renters_out(market: Market):
    """Unanswered hellos used to cost the agent a table entry each for 30 s: 10,050 of them
    filled its 10,000-entry table and locked every renter out (that table fill is shown
    synchronously in tests/core/test_challenge_budget.py: this 2-core box cannot open 10,000
    TLS connections within the 30 s a nonce lives). Now challenges are stateless and each
    address has a budget: the flooding address runs out, a renter from another address
    still connects."""
    cid, key = open_channel(market.devnet.profile, _dev(8), _provider(), 10**6)
    url = market.ready["url"]

    async def flood(n: int) -> dict[str, int]:
        outcome: dict[str, int] = {}
        sem = asyncio.Semaphore(32)

        async def one() -> None:
            async with sem:
                try:
                    what = await challenge_only(url, local_host="127.0.0.2")
                except OSError as exc:
                    what = f"os: {exc}"
                outcome[what[:60]] = outcome.get(what[:60], 0) + 1

        await asyncio.gather(*(one() for _ in range(n)))
        return outcome

    outcome = _run(flood(300))
    assert outcome.get("challenge", 0) < 300, f"the stranger got every challenge: {outcome}"
    got = _run(_hello(market, cid, key))
    assert isinstance(got, Linked), f"a renter was locked out by the flood: {got}"


# -- 17.4: an offer that copies another provider's endpoint -----------------------------------


def test_a_copied_offer_is_refused_before_any_money_moves(market: Market, tmp_path: Path):
    """Another address registers the honest offer's endpoint and certificate, cheaper: the
    renter's probe finds that the agent there is another provider and stops before any
    transaction. (A registry that binds a certificate to its first provider refuses the copy
    with the same fingerprint: the copy then carries its own, and the pinned TLS handshake
    stops the renter, again before any money moves.)"""
    from jupyter_gpumarket.chain.client import send
    from jupyter_gpumarket.chain.keystore import create_keystore
    from jupyter_gpumarket.exceptions import (
        AuthenticationFailed,
        ChainError,
        TlsFingerprintMismatch,
    )
    from jupyter_gpumarket.provisioning.paid import open_paid_lease

    from marketproc import PASSWORD, PRICE

    c = contracts(market.devnet.profile)
    copier = _dev(3)
    honest = list(c.registry.functions.offers(market.ready["offer_id"]).call())

    def register(fingerprint: bytes) -> None:
        args = [*honest[1:6], PRICE - 1, *honest[7:10]]
        args[1] = fingerprint
        send(c.w3, copier, c.registry.functions.register(*args), what="register a copy")

    try:
        register(honest[2])
        expected: type[Exception] = AuthenticationFailed
    except ChainError:  # the registry binds the certificate to the honest provider
        register(b"\x5a" * 32)
        expected = TlsFingerprintMismatch
    renter = _dev(9)
    wallet = tmp_path / "renter9.json"
    create_keystore(PASSWORD, private_key=renter.key, path=wallet)

    def renter_state() -> tuple[int, int]:  # its tokens, and how many transactions it sent
        return (
            int(c.token.functions.balanceOf(renter.address).call()),
            c.w3.eth.get_transaction_count(renter.address),
        )

    before = renter_state()
    with pytest.raises(expected) as err:
        open_paid_lease(
            network=str(market.profile),
            offer_spec="region=eu,max_price=4000000",  # the copy is the cheapest
            budget=10_000_000,
            wallet=str(wallet),
            password=PASSWORD,
        )
    message = str(err.value)
    if expected is AuthenticationFailed:
        assert copier.address.lower() in message.lower()
        assert _provider().lower() in message.lower()
    assert "nothing was paid" in message
    assert renter_state() == before  # no deposit moved, no approve, no channel opened
