"""The renter's kernel environment: checked and bounded before use, never the launcher's.

Pure checks of :mod:`~jupyter_gpumarket.agent.kernel_env` and its seccomp filter, then a real
agent on loopback sent ``start_kernel`` messages a renter's client would never build (raw JSON:
names with ``=``, NUL, oversized values, too many variables).
"""

from __future__ import annotations

import json
import os
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.agent.kernel_env import (
    LAUNCHER_ENV,
    MAX_RENTER_ENV_BYTES,
    MAX_RENTER_ENV_VALUE_BYTES,
    MAX_RENTER_ENV_VARS,
    build_kernel_env,
    check_renter_env,
    shim_argv,
)
from jupyter_gpumarket.agent.kernels import KernelSettings
from jupyter_gpumarket.agent.sandbox import (
    SandboxMounts,
    SandboxPolicy,
    build_bwrap_argv,
    default_policy,
    sandbox_available,
)
from jupyter_gpumarket.agent.seccomp import userns_filter, userns_filter_fd
from jupyter_gpumarket.agent.server import AgentConfig, AgentServer
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.session import TunnelSession
from jupyter_gpumarket.exceptions import ProtocolError

TOKEN = "test-token"
KEY = "k" * 32

BAD_ENVS = [
    ({"A=B": "x"}, "not a variable name"),
    ({"": "x"}, "not a variable name"),
    ({"1A": "x"}, "not a variable name"),
    ({"A B": "x"}, "not a variable name"),
    ({"A\0B": "x"}, "not a variable name"),
    ({"A" * 300: "x"}, "not a variable name"),
    ({"A": "x\0y"}, "without NUL"),
    ({"A": "\ud800"}, "UTF-8"),
    ({"A": "x" * (MAX_RENTER_ENV_VALUE_BYTES + 1)}, "put large data in a file"),
    ({f"V{i}": "x" for i in range(MAX_RENTER_ENV_VARS + 1)}, "more than the"),
    (
        {f"V{i}": "x" * MAX_RENTER_ENV_VALUE_BYTES for i in range(MAX_RENTER_ENV_BYTES // 32768)},
        "environment may have",
    ),
]


@pytest.mark.parametrize(("env", "message"), BAD_ENVS, ids=range(len(BAD_ENVS)))
def test_renter_env_names_and_sizes_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        check_renter_env(env)


def test_renter_variables_are_the_kernels_and_the_agent_pins_its_own(tmp_path: Path) -> None:
    renter = {"LD_PRELOAD": "/w/evil.so", "PATH": "/w/bin", "MY_SETTING": "1", "HOME": "/etc"}
    renter["CUDA_VISIBLE_DEVICES"] = "0,1,2,3"
    env = build_kernel_env(
        {"PATH": "/usr/bin", "GPUMARKET_WALLET_PASSWORD": "pw"},
        renter,
        workdir=tmp_path,
        gpu_env={"CUDA_VISIBLE_DEVICES": "1"},
        settings=KernelSettings(),
    )
    assert env["LD_PRELOAD"] == "/w/evil.so"  # the kernel's own business, inside the sandbox
    assert env["PATH"] == "/w/bin"
    assert env["MY_SETTING"] == "1"
    assert env["HOME"] == str(tmp_path / ".gpumarket" / "home")
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "GPUMARKET_WALLET_PASSWORD" not in env
    # the launcher's environment is a constant: nothing above can be in it
    assert dict(LAUNCHER_ENV) == {"PATH": LAUNCHER_ENV["PATH"]}
    assert "/w" not in LAUNCHER_ENV["PATH"]


def test_launcher_argv_carries_no_renter_value(tmp_path: Path) -> None:
    """Values go through a 0600 file, not argv (world-readable in /proc)."""
    argv = shim_argv("/usr/bin/python3", "/run/x/kernel-env.json", ["/usr/bin/python3", "-m", "k"])
    assert argv[:4] == ["/usr/bin/python3", "-I", "-S", "-c"]  # no PYTHON* variable, no site
    mounts = SandboxMounts(str(tmp_path / "w"), str(tmp_path / "r"), uid=1000, gid=1000)
    full = build_bwrap_argv(SandboxPolicy(hidden=()), mounts, argv, seccomp_fd=5)
    assert full[full.index("--seccomp") + 1] == "5"
    assert full.index("--seccomp") < full.index("--")
    with pytest.raises(ValueError, match="absolute"):
        shim_argv("python3", "env.json", ["python3"])


def test_userns_filter_is_a_whole_bpf_program_or_none() -> None:
    for machine in ("x86_64", "aarch64"):
        prog = userns_filter(machine)
        assert prog is not None
        assert len(prog) % 8 == 0
        insns = [struct.unpack("<HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
        assert insns[-1][0] == 0x06  # every path ends in a return
        assert any(k == 0x10000000 for *_, k in insns)  # CLONE_NEWUSER is tested
    assert userns_filter("riscv64") is None  # no table: the agent logs that userns stay open


# -- a real agent, sent what no honest client sends ----------------------------------------------
@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[AgentServer]:
    srv = AgentServer(
        AgentConfig(
            state_dir=tmp_path / "state",
            dev_token=TOKEN,
            max_kernels=len(BAD_ENVS) + 1,  # a lease per link; closed ones linger
            ready_file=tmp_path / "ready.json",
        )
    )
    await srv.start()
    yield srv
    await srv.stop()


async def _link(srv: AgentServer) -> ClientConnection:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ws = await connect(srv.url, ssl=ctx, compression=None, max_size=None)
    await ws.send(control.dump(control.Hello(token=TOKEN)).decode())
    control.parse_welcome(await ws.recv())
    return ws


async def _ask(ws: ClientConnection, me: TunnelSession, raw: bytes) -> object:
    await ws.send(me.send(Channel.AGENT, [raw]))
    while True:
        delivery = me.receive(await ws.recv())
        if delivery is not None and delivery.channel == Channel.AGENT:
            return control.parse_agent_message(delivery.parts[0])


def _start(env: dict[str, str]) -> bytes:
    return json.dumps({"op": "start_kernel", "key": KEY, "env": env}).encode()


async def test_agent_refuses_bad_renter_envs_and_keeps_serving(server: AgentServer) -> None:
    for env, message in BAD_ENVS:
        ws = await _link(server)
        me = TunnelSession()
        try:
            reply = await _ask(ws, me, _start(env))
        except ConnectionClosed:  # refused while parsing: only this link is closed
            assert ws.close_code == control.CloseCode.PROTOCOL, ws.close_reason
            assert "start_kernel.env" in (ws.close_reason or "")
            continue
        assert isinstance(reply, control.Refused), reply
        assert reply.request == "start_kernel"
        assert message in reply.message
        await ws.close()
    ws = await _link(server)  # the agent still starts a kernel with a fine environment
    reply = await _ask(ws, TunnelSession(), _start({"MY_SETTING": "1"}))
    assert isinstance(reply, control.KernelStarted), reply
    await ws.close()


def test_the_shim_gives_the_kernel_exactly_its_env_inside_a_real_sandbox(tmp_path: Path) -> None:
    ok, why = sandbox_available()
    if not ok:
        pytest.skip(f"no kernel sandbox on this machine: {why}")
    work, run = tmp_path / "work", tmp_path / "run"
    work.mkdir()
    run.mkdir()
    env = {"HOME": str(work / ".gpumarket" / "home"), "MY_SETTING": "1", "PATH": "/w/bin"}
    env_file = run / "kernel-env.json"
    env_file.write_text(json.dumps(env))
    nobody = 65534 if os.geteuid() == 0 else None
    if nobody is not None:  # a root agent hands the dirs to the slot's user
        for p in (work, run, env_file):
            os.chown(p, nobody, nobody)
    report = (  # the environment as exec'd (Python itself may add LC_CTYPE to os.environ)
        "import json, os; raw = open('/proc/self/environ', 'rb').read().split(b'\\0'); "
        "env = dict(i.decode().split('=', 1) for i in raw if i); "
        "json.dump([env, os.getuid()], open('out.json', 'w'))"
    )
    kernel = [sys.executable, "-c", report]
    policy = default_policy(tmp_path / "state", python=sys.executable)
    mounts = SandboxMounts(str(work), str(run), uid=nobody, gid=nobody)
    fd = userns_filter_fd() if nobody is not None else None
    try:
        argv = build_bwrap_argv(
            policy, mounts, shim_argv(sys.executable, str(env_file), kernel), seccomp_fd=fd
        )
        res = subprocess.run(
            argv,
            env=dict(LAUNCHER_ENV),
            cwd="/",
            capture_output=True,
            timeout=60,
            pass_fds=() if fd is None else (fd,),
        )
    finally:
        if fd is not None:
            os.close(fd)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    seen, uid = json.loads((work / "out.json").read_text())
    assert seen == env  # no more, no less: nothing of the launcher's, nothing lost
    assert Path(env["HOME"]).is_dir()  # made inside, as the kernel's user
    assert not env_file.exists()  # read once and gone
    if nobody is not None:
        assert uid == nobody
