"""`gpumarket demo`: devnet + a paid local provider + JupyterLab whose kernel rents it.

One command, Ctrl-C stops everything: a devnet chain (anvil, or the embedded chain) with the
contracts, a provider agent that publishes its offer in the Registry, and JupyterLab whose
`gpumarket` kernel opens an escrow channel to that offer and pays per second with vouchers.
The provider is this machine (labelled CPU only when it has no NVIDIA GPU). `--dev` skips the
chain: a dev provider with a token.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.exceptions import AgentError, ConfigError

DEFAULT_HOME = Path("~/.gpumarket/demo")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    demo = sub.add_parser("demo", help="local provider + JupyterLab with the notebooks")
    demo.add_argument("--port", type=argtypes.port, default=8888, help="JupyterLab port")
    demo.add_argument("--ip", default="127.0.0.1", help="JupyterLab address")
    demo.add_argument(
        "--notebook-dir", type=Path, help="folder to open (default: the project's notebooks/)"
    )
    demo.add_argument("--home", type=Path, default=DEFAULT_HOME, help="demo state folder")
    demo.add_argument("--no-lab", action="store_true", help="only run the provider")
    demo.add_argument("--dev", action="store_true", help="no chain: a dev provider with a token")
    demo.add_argument(
        "--price-per-hour",
        type=argtypes.price_per_hour,
        default=1_800_000,
        help="the demo offer's price (base units)",
    )
    demo.add_argument("--open-browser", action="store_true")
    demo.add_argument(
        "lab_args", nargs=argparse.REMAINDER, help="after --: more options for jupyter lab"
    )
    demo.set_defaults(func=_demo)


def _notebooks() -> Path:
    here = Path(__file__).resolve().parents[2] / "notebooks"
    return here if here.is_dir() else Path.cwd()


def _start_provider(home: Path, token: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    ready = home / "provider-ready.json"
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "jupyter_gpumarket.cli",
        "provider",
        "serve",
        "--dev",
        "--dev-token",
        token,
        "--state-dir",
        str(home / "provider"),
        "--ready-file",
        str(ready),
    ]
    with (home / "provider.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AgentError(f"the demo provider did not start; see {home / 'provider.log'}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return proc, {
        "GPUMARKET_PROVIDER_URL": info["url"],
        "GPUMARKET_TLS_FINGERPRINT": info["tls_fingerprint"],
        "GPUMARKET_DEV_TOKEN": token,
    }


DEMO_PASSWORD = "gpumarket-demo"  # demo wallets hold devnet tokens only


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path, log: Path, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        if ready.exists():
            info = json.loads(ready.read_text())
            if key in info:
                return info
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AgentError(f"the demo provider did not start; see {log}")
        time.sleep(0.1)


def _start_paid_provider(
    home: Path, profile: Path, price: int
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.keystore import create_keystore

    wallets = {"provider": (home / "provider-wallet.json", 1), "renter": (home / "wallet.json", 2)}
    for path, index in wallets.values():
        if not path.exists():
            create_keystore(DEMO_PASSWORD, private_key=dev_account(index).key, path=path)
    ready, log_path = home / "provider-ready.json", home / "provider.log"
    ready.unlink(missing_ok=True)
    flags, why = _probe_isolation()
    print(why, flush=True)
    base = {"GPUMARKET_HOME": str(home), "GPUMARKET_WALLET_PASSWORD": DEMO_PASSWORD}
    cmd = [
        sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve",
        "--network", str(profile), "--wallet", str(wallets["provider"][0]),
        "--price-per-hour", str(price), "--region", "local",
        "--state-dir", str(home / "provider"), "--ready-file", str(ready),
        *flags,
    ]  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **base}
        )
    info = _wait_ready(proc, ready, log_path, "offer_id")
    print(f"offer {info['offer_id']} at {info['url']} ({price} base units/h)", flush=True)
    return proc, {
        **base,
        "GPUMARKET_NETWORK": str(profile),
        "GPUMARKET_OFFER": str(info["offer_id"]),
        "GPUMARKET_BUDGET": str(price * 2),
        "GPUMARKET_WALLET": str(wallets["renter"][0]),
    }


def write_env_file(home: Path, env: dict[str, str]) -> Path:
    """``<home>/demo.env``: the renter's settings (demo wallet password included) as shell
    exports, so `gpumarket` commands in another terminal act on the demo."""
    path = home / "demo.env"
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# source this file: gpumarket commands then use the demo's chain and wallet\n")
        out.write("\n".join(lines) + "\n")
    return path


def isolation_flags(
    *, probe_ok: bool, probe_reason: str, is_root: bool, slots: int, nft: bool
) -> tuple[list[str], str]:
    """`provider serve` flags for the demo's offer: the kernel sandbox whenever this machine can
    run it (as `provider serve` decides: bubblewrap works and, as root, slot users exist), else
    published labelled unsandboxed; and what to tell the user."""
    if not probe_ok:
        problem = probe_reason
    elif is_root and slots < 1:
        problem = "no kernel slot users exist: run `gpumarket provider setup --slots 2` as root"
    else:
        # kernels must not reach the agent's port: root guards it with nftables; otherwise
        # the kernels get their own network namespace (no internet from the notebook)
        egress = "full" if is_root and nft else "none"
        flags = ["--sandbox", "on", "--egress", egress]
        if is_root:
            flags += ["--max-kernels", str(min(slots, 4))]
        return flags, f"kernels run in the bubblewrap sandbox (network: {egress})"
    return (
        ["--sandbox", "off", "--unsafe-no-sandbox"],
        f"WARNING: kernels run UNSANDBOXED (offer labelled so): {problem}",
    )


def _probe_isolation() -> tuple[list[str], str]:
    from jupyter_gpumarket.agent.sandbox import sandbox_available
    from jupyter_gpumarket.agent.slots import find_slot_users

    is_root = os.geteuid() == 0
    ok, reason = sandbox_available()
    return isolation_flags(
        probe_ok=ok,
        probe_reason=reason,
        is_root=is_root,
        slots=len(find_slot_users()) if is_root else 0,
        nft=shutil.which("nft") is not None,
    )


def _demo(args: argparse.Namespace) -> int:
    home = args.home.expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    devnet = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if args.dev:
            print("starting a local provider (dev mode) ...", flush=True)
            provider, env = _start_provider(home, secrets.token_urlsafe(16))
            print(f"provider {env['GPUMARKET_PROVIDER_URL']}", flush=True)
        else:
            from jupyter_gpumarket.chain.devnet import start_devnet

            print("starting a devnet and deploying the contracts ...", flush=True)
            profile = home / "networks" / "devnet.json"
            os.environ["GPUMARKET_HOME"] = str(home)
            devnet = start_devnet(profile_path=profile)
            print(f"devnet ({devnet.kind}) at {devnet.profile.rpc_url}", flush=True)
            print("starting a paid local provider and publishing its offer ...", flush=True)
            provider, env = _start_paid_provider(home, profile, args.price_per_hour)
            env_file = write_env_file(home, env)
            print(f"for `gpumarket leases`, `wallet balance` …: source {env_file}", flush=True)
        procs.append(provider)
        if not args.no_lab:
            procs.append(_start_lab(args, env))
        _wait(procs)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
        if devnet is not None:
            devnet.stop()
        print("demo stopped", flush=True)
    return 0


def _start_lab(args: argparse.Namespace, env: dict[str, str]) -> subprocess.Popen[bytes]:
    lab = shutil.which("jupyter-lab", path=os.path.dirname(sys.executable)) or shutil.which(
        "jupyter-lab"
    )
    if lab is None:
        raise ConfigError("JupyterLab is not installed: pip install 'jupyter-gpumarket[lab]'")
    notebook_dir = (args.notebook_dir or _notebooks()).resolve()
    cmd = [
        lab,
        f"--ServerApp.ip={args.ip}",
        f"--ServerApp.port={args.port}",
        f"--ServerApp.root_dir={notebook_dir}",
        f"--ServerApp.open_browser={args.open_browser}",
        "--MultiKernelManager.default_kernel_name=gpumarket",
        *[a for a in args.lab_args if a != "--"],
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--ServerApp.allow_root=True")
    print(f"starting JupyterLab on {notebook_dir} (kernel: Python 3 (GPU Market)) ...", flush=True)
    return subprocess.Popen(cmd, env={**os.environ, **env})


def _wait(procs: list[subprocess.Popen[bytes]]) -> None:
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop["now"]:
            if any(p.poll() is not None for p in procs):
                print("a demo process exited; stopping the others", flush=True)
                return
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
