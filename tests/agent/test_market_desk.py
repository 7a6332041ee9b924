"""The agent's market side without sockets: the probe reply (from the H100 fixture's NVML
readings), its signature, the first-message parsing, ``--simulate-gpu`` and the challenge
compute backends (their answers pass the renter's checks)."""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from jupyter_gpumarket.agent.challenge_compute import Backend, Cancelled, pick_backend
from jupyter_gpumarket.agent.gpu import GpuInfo, GpuInventory
from jupyter_gpumarket.agent.gpu_sim import parse_simulated, simulated_inventory
from jupyter_gpumarket.agent.market import MarketDesk
from jupyter_gpumarket.core import challenge as ch
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core import vram_proof as vp
from jupyter_gpumarket.core.market_msgs import (
    PROBE_REPLY_MAX_BYTES,
    ChallengeRequest,
    ProbeRequest,
)
from jupyter_gpumarket.core.market_offer import ProbeResult
from jupyter_gpumarket.core.verification import Claim, compare_detected
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError
from jupyter_gpumarket.market.probe import _check_signer

FIXTURE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "h100-nvml.json").read_text()
)
PIN = "sha256:" + "ab" * 32


def h100_inventory(count: int = 1) -> GpuInventory:
    gpus = tuple(
        GpuInfo(
            index=i,
            name=FIXTURE["name"],
            uuid=f"{FIXTURE['uuid']}-{i}",
            memory_total_bytes=FIXTURE["memory_total"],
            compute_capability=tuple(FIXTURE["cc"]),  # type: ignore[arg-type]
        )
        for i in range(count)
    )
    return GpuInventory(gpus, "550.54.15", "12.4", "NVML")


def desk(inv: GpuInventory, sign: Any = None, **info: Any) -> MarketDesk:
    return MarketDesk(
        info={"gpus_detected": inv.to_json(), "isolation": "sandboxed", **info},
        fingerprint=PIN,
        capacity=lambda: (2, len(inv.gpus)),
        sign=sign or (lambda message: None),
    )


def test_probe_reply_of_the_h100_fixture_is_detected_as_the_claim() -> None:
    reply = desk(h100_inventory()).probe_reply("00" * 16)
    result = ProbeResult.from_reply(4, reply, 1.5)
    assert result.detected is not None
    assert result.detected.names == ("NVIDIA H100 80GB HBM3",)
    assert result.detected.vram_mib == (81559,)
    assert (result.free_kernels, result.free_gpus, result.sandboxed) == (2, 1, True)
    assert compare_detected(Claim("H100-SXM5-80GB", 1, 81920), result.detected).ok is True
    assert compare_detected(Claim("H100", 2, 81920), result.detected).ok is False
    assert reply["simulated"] is False
    assert reply["provider"] is None


def test_probe_reply_of_64_gpus_fits_the_renters_limit() -> None:
    reply = desk(h100_inventory(64)).probe_reply("00" * 16)
    assert len(json.dumps(reply)) < PROBE_REPLY_MAX_BYTES // 2


def test_a_paid_agents_probe_reply_is_signed_by_its_provider() -> None:
    key = Account.create()

    def sign(message: bytes) -> tuple[str, str]:
        return key.address, "0x" + bytes(key.sign_message(encode_defunct(message)).signature).hex()

    nonce = secrets.token_hex(16)
    reply = desk(h100_inventory(), sign).probe_reply(nonce)
    assert _check_signer(reply, nonce, PIN, key.address) == key.address
    with pytest.raises(ProtocolError, match="not the offer's provider"):
        _check_signer(reply, nonce, PIN, Account.create().address)
    with pytest.raises(ProtocolError):
        _check_signer(reply, secrets.token_hex(16), PIN, key.address)


@pytest.mark.parametrize(
    "first",
    [
        {"op": "probe", "nonce": "zz" * 16},
        {"op": "probe", "nonce": "00" * 8},
        {"op": "probe", "nonce": "00" * 16, "extra": 1},
        {"op": "challenge", "version": 2, "setup": {}},
        {"op": "challenge", "setup": []},
    ],
)
def test_bad_market_first_messages_are_refused(first: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        control.parse_first(json.dumps(first))


def test_market_first_messages_parse() -> None:
    assert isinstance(
        control.parse_first('{"op":"probe","nonce":"' + "0" * 32 + '"}'), ProbeRequest
    )
    got = control.parse_first('{"op":"challenge","version":1,"setup":{"n":8}}')
    assert isinstance(got, ChallengeRequest)


def test_simulate_gpu_claims_the_table_row() -> None:
    inv = simulated_inventory("H100x2")
    assert [g.name for g in inv.gpus] == ["NVIDIA H100 SXM"] * 2
    assert inv.gpus[0].memory_total_bytes == 81920 * 2**20
    assert "SIMULATED" in inv.reason
    assert parse_simulated("RTX 4090") == ("RTX 4090", 1)
    for bad in ("", "H100x0", "H100x65", "NoSuchGPU", "H100" * 40):
        with pytest.raises(ConfigError):
            parse_simulated(bad)


def answer(b: Backend, precision: str, n: int = 24, rounds: int = 2) -> ch.RowCheck:
    """What the agent's session does with a backend, checked as the renter checks it."""
    cancel = threading.Event()
    spec = ch.MatmulSpec.fresh(n, rounds, precision)
    mats = b.prepare(spec, cancel)
    products = {r: b.product(spec, mats, r, cancel) for r in range(rounds)}
    sums = {r: b.row_sums(p) for r, p in products.items()}
    commit = ch.Commit(tuple(ch.round_digest(spec, r, sums[r]) for r in range(rounds)))
    sample = ch.choose_sample(spec, secrets.token_bytes(32))
    rows: dict[tuple[int, int], bytes] = {}
    for r in sample.rounds:
        wanted = [i for rr, i in sample.rows if rr == r]
        rows.update(zip(((r, i) for i in wanted), b.rows(products[r], wanted), strict=True))
    return ch.check_reveal(
        spec, commit, sample, ch.Reveal({r: sums[r] for r in sample.rounds}, rows)
    )


def fill_answers(b: Backend) -> vp.VramProof:
    spec = vp.VramSpec.fresh(1)
    buf = b.fill(spec, threading.Event())
    slices = vp.choose_slices(spec, secrets.token_bytes(32), count=4, length=256)
    answers = [b.slice_digest(buf, o, slices.length) for o in slices.offsets]
    return vp.vram_verdict(spec, slices, answers, 0.0, 1.0)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_pure_python_backend_answers_pass_the_renters_check(precision: str) -> None:
    check = answer(Backend(), precision)
    assert check.ok, check.reason


def test_pure_python_fill_passes_the_vram_check() -> None:
    assert fill_answers(Backend()).proven_mib == 1


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_numpy_backend_answers_pass_the_renters_check(precision: str) -> None:
    pytest.importorskip("numpy")
    b = pick_backend(gpu=False)
    assert b.device == "numpy"
    check = answer(b, precision, n=40, rounds=3)
    assert check.ok, check.reason
    assert fill_answers(b).proven_mib == 1


def test_a_cancelled_computation_stops() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        Backend().prepare(ch.MatmulSpec.fresh(64, 1, "fp32"), cancel)
