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
    base = {"GPUMARKET_HOME": str(home), "GPUMARKET_WALLET_PASSWORD": DEMO_PASSWORD}
    cmd = [
        sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve",
        "--network", str(profile), "--wallet", str(wallets["provider"][0]),
        "--price-per-hour", str(price), "--region", "local",
        "--state-dir", str(home / "provider"), "--ready-file", str(ready),
        "--unsafe-no-sandbox",  # labelled unsandboxed where bubblewrap is missing
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
