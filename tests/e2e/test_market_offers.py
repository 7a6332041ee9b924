"""The market path end to end: a fleet of real paid agents on a devnet, the offer index from
Registry events, `gpumarket offers` (real CLI subprocess) with every policy and constraint,
dead / hung / malformed offers shown with their reason and never chosen, and launch failover
(the first provider fails during launch -> the next one is used, the renter pays once)."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from marketfleet import Fleet, running_fleet, silent_listener

from agentproc import environ

pytestmark = pytest.mark.slow

KEYS = [
    "id",
    "provider",
    "endpoint",
    "gpu_model",
    "gpu_class",
    "gpu_count",
    "vram_mib",
    "price_per_hour",
    "region",
    "reachable",
    "latency_ms",
    "free_kernels",
    "verification",
    "reputation",
    "reason",
    "simulated",
    "sandboxed",
]
SPECS = {
    "broken": (4, 500_000, "eu", ("--kernel-python", "/bin/false")),  # fails at kernel start
    # one kernel slot: full while the failover test's kernel runs on it
    "h100": (1, 3_000_000, "eu", ("--simulate-gpu", "H100", "--max-kernels", "1")),
    "rtx": (3, 400_000, "us", ("--simulate-gpu", "RTX 4090")),
    "dead": (5, 100_000, "eu", ()),  # killed once registered: its offer stays on chain
}


def _fp(agent: Any) -> bytes:
    return bytes.fromhex(agent.ready["tls_fingerprint"].split(":", 1)[1])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    with silent_listener() as hung_port, running_fleet(tmp, SPECS) as f:
        dead = f.agents["dead"]
        dead.proc.kill()  # a crash: its offer stays active on chain
        dead.proc.wait(30)
        f.ids = {name: a.offer_id for name, a in f.agents.items()}
        h100 = f.agents["h100"]
        f.ids["spoof"] = f.register(  # claims an A100 on the agent whose NVML says H100
            1, endpoint=h100.ready["url"], tls_fingerprint=_fp(h100),
            gpu_model="NVIDIA A100-SXM4-80GB", gpu_count=1, vram_mb=81920,
            price_per_hour=200_000, region="eu",
        )  # fmt: skip
        f.ids["hung"] = f.register(
            6, endpoint=f"wss://127.0.0.1:{hung_port}/", tls_fingerprint=b"\x22" * 32,
            price_per_hour=50_000, region="eu",
        )  # fmt: skip
        # hostile chain data: control characters, absurd counts, an endpoint that is no URL
        f.ids["junk"] = f.register(
            7, endpoint="\x1b[2Jnot a url" + "A" * 200, tls_fingerprint=b"\x33" * 32,
            gpu_model="\x00\x07H100\x1b[31m", gpu_count=2**32 - 1, vram_mb=2**32 - 1,
            price_per_hour=1, region="eu", metadata_uri="gpumarket:simulated=1;" + "x" * 200,
        )  # fmt: skip
        yield f


def _offers(fleet: Fleet, *args: str) -> list[dict[str, Any]]:
    out = fleet.cli("offers", "--json", "--timeout", "5", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _usable(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in sorted(rows, key=lambda r: r["position"]) if r["usable"]]


def test_the_index_reads_registry_events_incrementally(fleet: Fleet, tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.profiles import load_profile
    from jupyter_gpumarket.market.index import OfferIndex

    profile = load_profile(fleet.profile_path)
    index = OfferIndex(profile, path=tmp_path / "offers.json")
    first = index.refresh()
    assert first.via == "events"
    assert first.from_block == 0
    ids = {o.offer_id for o in index.offers()}
    assert {fleet.ids["h100"], fleet.ids["rtx"], fleet.ids["hung"]} <= ids

    again = index.refresh()  # nothing new: only the blocks after the last one are read
    assert again.from_block == first.to_block + 1
    assert again.offers_read == 0

    new_id = fleet.register(8, price_per_hour=7_777, region="zz", tls_fingerprint=b"\x88" * 32)
    third = index.refresh()
    assert third.from_block == again.to_block + 1
    assert third.offers_read == 1
    assert index.get(new_id) is not None
    assert index.get(new_id).price_per_hour == 7_777

    # a second process starts from the cache: nothing before its last block is read again
    cached = OfferIndex(profile, path=tmp_path / "offers.json")
    assert cached.get(new_id) is not None
    assert cached.last_block == third.to_block
    assert cached.refresh().from_block == third.to_block + 1


def test_a_broken_or_foreign_cache_is_rebuilt(fleet: Fleet, tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.profiles import load_profile
    from jupyter_gpumarket.market.index import MAX_CACHE_BYTES, OfferIndex

    profile = load_profile(fleet.profile_path)
    path = tmp_path / "offers.json"
    for junk in (
        b"{not json",
        b"[]",
        json.dumps(
            {
                "version": 1,
                "chain_id": 1,
                "registry": "0x0",
                "last_block": 10**9,
                "last_hash": "0x",
                "offers": {"1": ["x"]},
            }
        ).encode(),
        b" " * (MAX_CACHE_BYTES + 10),
    ):
        path.write_bytes(junk)
        index = OfferIndex(profile, path=path)
        assert index.last_block == 0
        assert index.offers() == []
        assert index.refresh().from_block == 0
        assert fleet.ids["h100"] in {o.offer_id for o in index.offers()}


def test_offers_json_shows_every_offer_with_its_reason(fleet: Fleet) -> None:
    ids = fleet.ids
    rows = _offers(fleet)
    by_id = {r["id"]: r for r in rows}
    for row in rows:
        assert set(KEYS) <= set(row)
    spoof = by_id[ids["spoof"]]
    assert spoof["verification"] == "mismatch"
    assert spoof["reason"].startswith("mismatch")
    assert not spoof["usable"]
    for name in ("dead", "hung"):
        row = by_id[ids[name]]
        assert row["reachable"] is False
        assert not row["usable"]
        assert row["reason"].startswith("unreachable")
    if ids["junk"] in by_id:  # listed (unreachable) or left out as malformed, never usable
        assert not by_id[ids["junk"]]["usable"]
    usable = _usable(rows)
    assert usable[0] == ids["rtx"]  # cheapest usable, though dead/hung/junk are cheaper
    assert set(usable) == {ids["broken"], ids["h100"], ids["rtx"]}
    h100 = by_id[ids["h100"]]
    assert h100["reachable"] is True
    assert h100["latency_ms"] >= 0
    assert h100["free_kernels"] == 1
    assert h100["gpu_class"] == "H100 SXM"
    assert h100["simulated"] is True  # labelled; the probe's NVML reading agrees with the claim
    assert h100["verification"] == "detected"


CASES: list[tuple[tuple[str, ...], list[str]]] = [
    (("--gpu", "H100"), ["h100"]),
    (("--min-vram", "40000"), ["h100"]),
    (("--max-price", "450000"), ["rtx"]),
    (("--region", "us"), ["rtx"]),
    (("--gpu", "cpu"), ["broken"]),
    (("--verified", "--sort", "fastest"), ["h100", "rtx", "broken"]),
    (("--verified",), ["rtx", "broken", "h100"]),
    # fastest / value: the GPU offers first; CPU offers (no TFLOPS) after them, in any order
    (("--sort", "fastest", "--region", "eu"), ["h100", "broken"]),
    (("--sort", "fastest"), ["h100", "rtx", "broken"]),
    (("--sort", "value"), ["rtx", "h100", "broken"]),
]


def test_every_policy_and_constraint(fleet: Fleet) -> None:
    ids = fleet.ids
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: _offers(fleet, *case[0]), CASES))
    for (args, want), rows in zip(CASES, results, strict=True):
        got = _usable(rows)
        ordered = [ids[n] for n in want if not n.startswith("*")]
        tail = {ids[n[1:]] for n in want if n.startswith("*")}
        assert got[: len(ordered)] == ordered, args
        assert set(got[len(ordered) :]) == tail, args
        spoof = [r for r in rows if r["id"] == ids["spoof"]]
        assert not any(r["usable"] for r in spoof)  # never chosen, whatever the policy


def test_offers_table_and_bad_flags(fleet: Fleet) -> None:
    out = fleet.cli("offers", "--timeout", "1")
    assert out.returncode == 0, out.stderr
    assert "unreachable" in out.stdout
    assert "cheapest" in out.stdout
    assert "\x1b" not in out.stdout
    assert "\x00" not in out.stdout
    bad = [("--min-vram", "-1"), ("--max-price", "1e9"), ("--sort", "random"),
           ("--timeout", "nan"), ("--gpu", "x" * 100)]  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(len(bad)) as pool:
        results = list(pool.map(lambda args: fleet.cli("offers", *args), bad))
    for args, res in zip(bad, results, strict=True):
        assert res.returncode == 2, args
        assert "error" in res.stderr, args


def test_launch_fails_over_to_the_next_offer_and_the_renter_pays_once(fleet: Fleet) -> None:
    from jupyter_client.manager import KernelManager

    from jupyter_gpumarket.chain.escrow import EscrowClient

    from marketproc import leases_json

    ids, agents = fleet.ids, fleet.agents
    before = {n: fleet.balance(agents[n].account) for n in ("broken", "h100")}
    renter_before = fleet.balance(2)
    env = {**fleet.renter_env, "GPUMARKET_OFFER": "policy=cheapest,region=eu"}
    with environ(env):
        km = KernelManager(kernel_name="gpumarket")
        km.start_kernel()
        try:
            attempts = km.provisioner.launch_attempts
            assert [(a.offer_id, a.outcome[:6]) for a in attempts] == [
                (ids["broken"], "failed"), (ids["h100"], "ok"),
            ]  # fmt: skip
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            reply = kc.execute_interactive("import time; time.sleep(1)", timeout=60)
            assert reply["content"]["status"] == "ok"
            # its one kernel slot taken, the agent's offers are shown full and never chosen
            rows = {r["id"]: r for r in _offers(fleet, "--region", "eu")}
            full = rows[ids["h100"]]
            assert full["reason"].startswith("full"), full
            assert full["free_kernels"] == 0
            assert not full["usable"]
            kc.stop_channels()
        finally:
            km.shutdown_kernel(now=False)
    leases = {lease["offer_id"]: lease for lease in leases_json(fleet.renter_env)}
    failed, used = leases[ids["broken"]], leases[ids["h100"]]
    assert failed["state"] in ("stopped", "settled")  # the provider may have settled it at 0
    assert failed.get("error")
    escrow = EscrowClient(fleet.contracts())
    channel = escrow.channel(bytes.fromhex(used["channel_id"][2:]))
    deadline = time.monotonic() + 60
    while not channel.state.startswith("closed") and time.monotonic() < deadline:
        time.sleep(0.5)
        channel = escrow.channel(bytes.fromhex(used["channel_id"][2:]))
    assert channel.state.startswith("closed")  # the provider that ran the kernel settled
    gained = fleet.balance(agents["h100"].account) - before["h100"]
    price = agents["h100"].price
    assert gained > 0
    assert abs(gained - price * used["billed_seconds"] // 3600) <= price // 3600
    assert fleet.balance(agents["broken"].account) == before["broken"]  # paid nothing
    first = escrow.channel(bytes.fromhex(failed["channel_id"][2:]))
    assert first.redeemed == 0  # no voucher was ever signed for the failed attempt
    locked = 0 if first.state.startswith("closed") else first.deposit
    assert renter_before - fleet.balance(2) == gained + locked  # charged once; the rest refundable


def test_a_background_refresh_picks_up_new_offers(fleet: Fleet, tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.profiles import load_profile
    from jupyter_gpumarket.market.index import OfferIndex
    from jupyter_gpumarket.market.refresh import BackgroundRefresh

    index = OfferIndex(load_profile(fleet.profile_path), path=tmp_path / "offers.json")
    index.refresh()
    bg = BackgroundRefresh(index, interval=0.2).start()
    try:
        new_id = fleet.register(9, price_per_hour=9_999, region="zz", tls_fingerprint=b"\x99" * 32)
        deadline = time.monotonic() + 30
        while index.get(new_id) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert index.get(new_id) is not None  # no explicit refresh: the thread read it
        assert bg.error is None
    finally:
        bg.stop()
