"""The seeded verification challenge against real agents on loopback: an honest CPU agent is
``cpu``; an agent claiming an H100 it lacks (``--simulate-gpu``) is ``mismatch`` without the
verdict reading the label; a hostile agent's tampered answers are ``mismatch``; a busy or full
agent refuses before anything runs (an error, not a verdict). Small matrices (``n``) keep it
quick; the CLI runs once with the plan's own sizes."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_market_agent import ATTACKS, start_hostile_market_agent
from market_kit import dead_endpoint
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.agent.gpu import detect_gpus
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.verification import Claim
from jupyter_gpumarket.exceptions import ProviderRefused
from jupyter_gpumarket.market.probe import probe_endpoint
from jupyter_gpumarket.market.verify import verify_offer

from agentproc import AgentProcess, running_agent

pytestmark = pytest.mark.slow

H100 = Claim("H100", 1, 81920)
KEYS = {"offer_id", "verdict", "claimed_model", "fp32_tflops", "lowp_tflops"}
KEYS |= {"vram_proven_mib", "seconds"}
CLI = (sys.executable, "-m", "jupyter_gpumarket.cli", "offers", "verify")


def verify(agent: AgentProcess, claim: Claim, **kw: Any) -> dict[str, Any]:
    return asyncio.run(verify_offer(agent.url, agent.fingerprint, claim, offer_id=3, **kw))


def test_challenge_of_an_honest_cpu_agent_is_cpu(tmp_path: Path) -> None:
    with running_agent(tmp_path) as agent:
        result = verify(agent, Claim("CPU", 0, 0))  # the plan's own size for a CPU offer
    assert set(result) >= KEYS
    assert result["verdict"] == "cpu", result["reason"]
    assert result["rows_ok"] is True
    if detect_gpus().cpu_only:  # on a GPU machine the agent computes there (torch / cupy)
        assert result["backend"] == "cpu"
    assert result["offer_id"] == 3
    assert result["fp32_tflops"] > 0
    assert result["vram_proven_mib"] is None  # nothing to prove for a CPU offer


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("sim"), "--simulate-gpu", "H100") as agent:
        yield agent


def test_a_simulated_h100_is_a_mismatch(simulated: AgentProcess) -> None:
    report = asyncio.run(probe_endpoint(simulated.url, simulated.fingerprint, offer_id=1))
    assert report.simulated is True  # a dev agent says so in its probe (the verdict never reads it)
    assert report.result.detected is not None
    assert report.result.detected.names == ("NVIDIA H100 SXM",)
    result = verify(simulated, H100, n=48, rounds=1, vram_fill_mib=4)
    assert result["verdict"] == "mismatch"
    assert result["rows_ok"] is True  # its answers are right: what it ran on gives it away
    assert result["claimed_class"] == "H100 SXM"
    assert result["vram_proven_mib"] == 0  # host memory of a CPU backend is no VRAM


def test_cli_verify_of_a_simulated_h100_with_the_plans_sizes(simulated: AgentProcess) -> None:
    out = subprocess.run(
        [*CLI, "0", "--endpoint", simulated.url, "--fingerprint", simulated.fingerprint, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verdict"] == "mismatch"
    assert result["claimed_class"] == "H100 SXM"  # the claim came from the agent's own probe
    assert set(result) >= KEYS


def test_cli_verify_of_nothing_listening_fails(tmp_path: Path) -> None:
    url, pin = dead_endpoint()
    out = subprocess.run(
        [*CLI, "1", "--endpoint", url, "--fingerprint", pin, "--claim", "H100", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "does not answer" in out.stderr


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path]]:
    tmp = tmp_path_factory.mktemp("hostile-market")
    attack = tmp / "attack"
    agent = start_hostile_market_agent(tmp / "agent", attack)
    try:
        yield agent, attack
    finally:
        agent.stop()


@pytest.mark.parametrize("attack", ATTACKS)
def test_tampered_challenge_answers_are_a_mismatch(
    hostile: tuple[AgentProcess, Path], attack: str
) -> None:
    agent, attack_file = hostile
    attack_file.write_text(attack)
    result = verify(agent, H100, n=32, rounds=2, vram_fill_mib=1)
    assert result["verdict"] == "mismatch", result
    if attack == "liar":  # right numbers, a GPU's name: the throughput betrays it
        assert result["rows_ok"] is True
        assert "of the H100 SXM's 67 dense peak" in result["reason"]
    else:
        assert result["rows_ok"] is False
        assert result["reason"].startswith("wrong result:"), result["reason"]


def test_the_hostile_agent_is_honest_without_an_attack(hostile: tuple[AgentProcess, Path]) -> None:
    agent, attack_file = hostile
    attack_file.write_text("honest")
    result = verify(agent, Claim("CPU", 0, 0), n=32, rounds=2)
    assert result["verdict"] == "cpu", result["reason"]


def test_a_full_agent_refuses_the_challenge(tmp_path: Path) -> None:
    async def scenario(agent: AgentProcess) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        async with connect(agent.url, ssl=ctx, compression=None) as ws:  # the only lease
            await ws.send(control.dump(control.Hello(token=agent.token)).decode())
            control.parse_welcome(await ws.recv())
            await verify_offer(agent.url, agent.fingerprint, Claim("CPU", 0, 0))

    with (
        running_agent(tmp_path, "--max-kernels", "1") as agent,
        pytest.raises(ProviderRefused, match="every kernel slot is busy"),
    ):
        asyncio.run(scenario(agent))


def test_challenges_run_one_at_a_time(tmp_path: Path) -> None:
    async def scenario(agent: AgentProcess) -> list[Any]:
        claim = Claim("CPU", 0, 0)
        return await asyncio.gather(
            verify_offer(agent.url, agent.fingerprint, claim, n=96, rounds=2),
            verify_offer(agent.url, agent.fingerprint, claim, n=96, rounds=2),
            return_exceptions=True,
        )

    with running_agent(tmp_path) as agent:
        results = asyncio.run(scenario(agent))
    refused = [r for r in results if isinstance(r, ProviderRefused)]
    done = [r for r in results if isinstance(r, dict)]
    assert len(refused) == 1, results
    assert "a challenge is running" in str(refused[0])
    assert [r["verdict"] for r in done] == ["cpu"]


def test_a_challenge_flood_is_rate_limited(tmp_path: Path) -> None:
    async def scenario(agent: AgentProcess) -> list[Any]:
        out: list[Any] = []
        for _ in range(6):
            try:
                out.append(await verify_offer(agent.url, agent.fingerprint, H100, n=16, rounds=1))
            except ProviderRefused as exc:
                out.append(exc)
        return out

    with running_agent(tmp_path, "--simulate-gpu", "H100") as agent:
        results = asyncio.run(scenario(agent))
        assert agent.proc.poll() is None
    assert [isinstance(r, dict) for r in results] == [True] * 4 + [False] * 2
    assert all("challenge rate limit" in str(r) for r in results[4:])


async def _raw_products(agent: AgentProcess, count: int, n: int = 8, rounds: int = 1) -> str:
    """A renter that keeps asking for products on one connection; the agent's close reason."""
    from jupyter_gpumarket.core import challenge as ch
    from jupyter_gpumarket.core import challenge_wire as cw
    from jupyter_gpumarket.market.pinned import pinned_connection

    async with (
        asyncio.timeout(60),  # only detects an agent that computes instead of refusing
        pinned_connection(agent.url, agent.fingerprint, max_size=2**20) as ws,
    ):
        try:
            for i in range(count):
                spec = ch.MatmulSpec.fresh(n, rounds, "fp32")
                first = {"op": "challenge", "version": 1} if i == 0 else {"op": "setup"}
                await ws.send(json.dumps({**first, "setup": spec.setup_json()}))
                assert json.loads(await ws.recv())["op"] == "ready"
                await ws.send(json.dumps({"op": "go", "salt": spec.salt.hex()}))
                commit = cw.commit_from_json(json.loads(await ws.recv()), spec)
                assert commit.round_digests
                sample = ch.choose_sample(spec, b"\1" * 32)
                await ws.send(json.dumps({"op": "sample", **cw.sample_to_json(sample)}))
                assert json.loads(await ws.recv())["op"] == "reveal"
            await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.reason if exc.rcvd else "no close frame"
    return "still open"


def test_one_connection_cannot_hold_the_agent_with_endless_products(tmp_path: Path) -> None:
    with running_agent(tmp_path) as agent:
        reason = asyncio.run(_raw_products(agent, 6))
        assert agent.proc.poll() is None
    assert "at most 4 products" in reason


def test_a_challenge_beyond_the_backend_is_refused_before_computing(tmp_path: Path) -> None:
    with running_agent(tmp_path) as agent:
        # far beyond any CPU backend's ceiling (pure Python: 5e7 flops; numpy: 2e12)
        reason = asyncio.run(_raw_products(agent, 1, n=2048, rounds=1024))
        assert agent.proc.poll() is None
    assert "more than it answers" in reason


def _server_answering(*answers: str | bytes) -> Any:
    """A hostile 'agent' that answers each renter message with the next of ``answers``."""

    async def handler(ws: Any) -> None:
        for a in answers:
            await ws.recv()
            await ws.send(a)
        await ws.wait_closed()

    return handler


GARBAGE = {
    "not json": ("{{",),
    "deep nesting": ("[" * 5000 + "]" * 5000,),
    "no backend": ('{"op": "ready"}',),
    "huge ready": ('{"op": "ready", "backend": "cuda", "pad": "' + "x" * 100_000 + '"}',),
    "bad commit": ('{"op": "ready", "backend": "cuda"}', '{"op": "commit", "round_digests": [1]}'),
    "oversized reveal": (
        '{"op": "ready", "backend": "cuda"}',
        json.dumps({"op": "commit", "round_digests": ["00" * 32]}),
        b"\0" * (4 * 2**20),  # far above what the sampled rows can take
    ),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_challenge_answers_are_a_mismatch(tmp_path: Path, kind: str) -> None:
    from market_kit import hostile

    async def scenario() -> dict[str, Any]:
        async with hostile(tmp_path, _server_answering(*GARBAGE[kind])) as (url, pin):
            return await verify_offer(url, pin, H100, n=16, rounds=1, timeout=10)

    result = asyncio.run(scenario())
    assert result["verdict"] == "mismatch"
    assert result["rows_ok"] is False
    assert result["reason"].startswith("wrong result:"), result["reason"]
    if kind == "oversized reveal":
        assert "larger than any honest answer" in result["reason"]


def test_an_agent_without_the_market_ops_cannot_be_verified(tmp_path: Path) -> None:
    from market_kit import hostile

    async def old_agent(ws: Any) -> None:  # what an agent before the probe op answers
        await ws.recv()
        await ws.close(4000, "bad hello: first message must be a hello")

    async def scenario() -> tuple[Any, Any]:
        async with hostile(tmp_path, old_agent) as (url, pin):
            probed = await probe_endpoint(url, pin, offer_id=1)
            try:
                await verify_offer(url, pin, H100, n=16, rounds=1, timeout=10)
            except ProviderRefused as exc:
                return probed, exc
            return probed, None

    probed, refused = asyncio.run(scenario())
    assert "does not answer probes" in probed.result.reason
    assert refused is not None
    assert "does not know the challenge" in str(refused)


def test_an_agent_that_never_commits_times_out_as_a_mismatch(tmp_path: Path) -> None:
    from market_kit import hostile

    async def stalls(ws: Any) -> None:  # ready at once, then computes "forever"
        await ws.recv()
        await ws.send('{"op": "ready", "backend": "cuda"}')
        await ws.wait_closed()

    async def scenario() -> dict[str, Any]:
        async with hostile(tmp_path, stalls) as (url, pin):
            return await verify_offer(url, pin, H100, timeout=10)  # the plan's own deadline

    result = asyncio.run(scenario())
    assert result["verdict"] == "mismatch"
    assert result["reason"].startswith("no correct answer within")
