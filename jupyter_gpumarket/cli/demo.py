"""`gpumarket demo`: devnet + four paid local providers + JupyterLab with the notebooks.

One command, Ctrl-C stops everything: a devnet chain (anvil, or the embedded chain) with the
contracts, a funded demo wallet (a devnet dev account: its key is a PUBLIC test key), four
provider agents that publish offers in the Registry (three claim GPUs they do not have and are
labelled SIMULATED; one is this machine, CPU only when it has no NVIDIA GPU), and JupyterLab on
`notebooks/` whose `gpumarket` kernel opens an escrow channel to the picked offer and pays per
second with vouchers. `--dev` skips the chain: one dev provider with a token.

Only one demo runs per demo home: a second one fails before touching anything (`demo_lock`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.cli.demo_fleet import (
    DEMO_PASSWORD,
    RENTER_ACCOUNT,
    RunningProvider,
    ensure_wallet,
    start_fleet,
    wait_fleet,
)
from jupyter_gpumarket.cli.demo_lock import check_port_free, demo_lock
from jupyter_gpumarket.cli.demo_procs import Child, Children
from jupyter_gpumarket.exceptions import AgentError, ConfigError

__all__ = ["DEMO_PASSWORD", "isolation_flags", "register", "write_env_file"]

DEFAULT_HOME = Path("~/.gpumarket/demo")
_TOKEN_FLAGS = ("--IdentityProvider.token=", "--ServerApp.token=", "--NotebookApp.token=")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    demo = sub.add_parser("demo", help="local providers + JupyterLab with the notebooks")
    demo.add_argument("--port", type=argtypes.port, default=8888, help="JupyterLab port")
    demo.add_argument("--ip", default="127.0.0.1", help="JupyterLab address")
    demo.add_argument(
        "--notebook-dir", type=Path, help="folder to open (default: the project's notebooks/)"
    )
    demo.add_argument("--home", type=Path, default=DEFAULT_HOME, help="demo state folder")
    demo.add_argument("--no-lab", action="store_true", help="only run the chain and providers")
    demo.add_argument("--dev", action="store_true", help="no chain: a dev provider with a token")
    demo.add_argument(
        "--price-per-hour",
        type=argtypes.price_per_hour,
        default=200_000,
        help="the price of this machine's offer (base units; the simulated ones have theirs)",
    )
    demo.add_argument("--open-browser", action="store_true", help="open JupyterLab in a browser")
    demo.add_argument(
        "lab_args", nargs=argparse.REMAINDER, help="after --: more options for jupyter lab"
    )
    demo.set_defaults(func=_demo)


def _notebooks() -> Path:
    here = Path(__file__).resolve().parents[2] / "notebooks"
    return here if here.is_dir() else Path.cwd()


def _start_dev_provider(children: Children, home: Path, token: str) -> dict[str, str]:
    ready = home / "provider-ready.json"
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve", "--dev",
        "--dev-token", token, "--state-dir", str(home / "provider"), "--ready-file", str(ready),
    ]  # fmt: skip
    child = children.start("provider-local", cmd, env=dict(os.environ), log=home / "provider.log")
    deadline = time.monotonic() + 60
    while not ready.exists():
        if child.proc.poll() is not None or time.monotonic() > deadline:
            raise AgentError(f"the demo provider did not start; see {home / 'provider.log'}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return {
        "GPUMARKET_PROVIDER_URL": info["url"],
        "GPUMARKET_TLS_FINGERPRINT": info["tls_fingerprint"],
        "GPUMARKET_DEV_TOKEN": token,
    }


def _start_market(
    children: Children, home: Path, price: int
) -> tuple[Any, list[RunningProvider], dict[str, str]]:
    """Devnet + the four providers, started (`_market_ready` waits for their offers); the
    renter's settings, with this machine's offer pre-selected by its provider's address (its
    offer id is known only once it is published, and JupyterLab starts meanwhile)."""
    from jupyter_gpumarket.chain.anvil import find_anvil
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.devnet import start_devnet

    print("starting a devnet and deploying the contracts ...", flush=True)
    profile = home / "networks" / "devnet.json"
    anvil = find_anvil()  # the user's (~/.gpumarket/tools), before the home moves to the demo's
    if anvil is not None:
        os.environ.setdefault("GPUMARKET_ANVIL", str(anvil))
    os.environ["GPUMARKET_HOME"] = str(home)
    devnet = start_devnet(profile_path=profile)
    try:
        print(f"devnet ({devnet.kind}) at {devnet.profile.rpc_url}", flush=True)
        flags, why = _probe_isolation()
        print(why, flush=True)
        print("starting 4 paid local providers and publishing their offers ...", flush=True)
        fleet = start_fleet(children, home, profile, price, flags)
        wallet = ensure_wallet(home / "wallet.json", RENTER_ACCOUNT)
    except BaseException:
        devnet.stop()
        raise
    local = fleet[0]
    env = {
        "GPUMARKET_HOME": str(home),
        "GPUMARKET_WALLET_PASSWORD": DEMO_PASSWORD,
        "GPUMARKET_NETWORK": str(profile),
        "GPUMARKET_OFFER": f"provider={dev_account(local.spec.account).address}",
        "GPUMARKET_BUDGET": str(local.price_per_hour * 2),
        "GPUMARKET_WALLET": str(wallet),
    }
    return devnet, fleet, env


def _market_ready(fleet: list[RunningProvider], env: dict[str, str]) -> dict[str, str]:
    """Wait for every offer, list them; the renter's settings with this machine's offer id."""
    wait_fleet(fleet)
    for rp in fleet:
        assert rp.ready is not None
        print(
            f"  offer {rp.ready['offer_id']:>3}  {rp.spec.label:<28} {rp.spec.region:<9} "
            f"{_tusd(rp.price_per_hour)}/h  {rp.ready['url']}",
            flush=True,
        )
    print(
        f"demo wallet (devnet only; a PUBLIC dev key): {env['GPUMARKET_WALLET']}, "
        f"password {DEMO_PASSWORD}",
        flush=True,
    )
    assert fleet[0].ready is not None
    return {**env, "GPUMARKET_OFFER": str(fleet[0].ready["offer_id"])}


def _tusd(amount: int) -> str:
    from jupyter_gpumarket.core.money import format_amount

    return format_amount(amount, 6, "TUSD")


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
    started = time.monotonic()
    with demo_lock(home, port=None if args.no_lab else args.port):
        if not args.no_lab:
            check_port_free(args.ip, args.port)
        children, devnet, code = Children(), None, 0
        old = _stop_on(signal.SIGTERM)
        try:
            if args.dev:
                print("starting a local provider (dev mode) ...", flush=True)
                env = _start_dev_provider(children, home, secrets.token_urlsafe(16))
                print(f"provider {env['GPUMARKET_PROVIDER_URL']}", flush=True)
            else:
                devnet, fleet, env = _start_market(children, home, args.price_per_hour)
            lab = None if args.no_lab else _start_lab(children, args, env, home)
            if not args.dev:
                env_file = write_env_file(home, _market_ready(fleet, env))
                print(f"for `gpumarket leases`, `wallet balance` …: source {env_file}", flush=True)
            if lab is None:
                took = time.monotonic() - started
                print(f"demo ready in {took:.1f} s (no JupyterLab)", flush=True)
            else:
                url = _wait_lab(*lab)
                took = time.monotonic() - started
                print(f"JupyterLab ready in {took:.1f} s: {url}", flush=True)
                print(
                    "open getting-started.ipynb to pick a GPU and run on it; transparency.ipynb "
                    "shows what the market verified",
                    flush=True,
                )
            print("Ctrl-C stops the demo", flush=True)
            code = _wait(children)
        except KeyboardInterrupt:
            pass
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):  # nothing may cut the cleanup short
                signal.signal(signum, signal.SIG_IGN)
            print("stopping the demo ...", flush=True)
            providers = [c.name for c in children.items if c.name.startswith("provider-")]
            children.stop_all([["lab"], providers], timeout=20)
            if devnet is not None:
                devnet.stop()
            signal.signal(signal.SIGTERM, old)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            print("demo stopped", flush=True)
    return code


def _stop_on(signum: int) -> Any:
    """SIGTERM stops the demo as Ctrl-C does (KeyboardInterrupt), also while it starts."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signum, handler)


def _lab_token(lab_args: list[str]) -> tuple[str, list[str]]:
    """The token JupyterLab will use: the caller's (after --), else a fresh one we pass."""
    for arg in lab_args:
        for flag in _TOKEN_FLAGS:
            if arg.startswith(flag):
                return arg[len(flag) :], []
    token = secrets.token_hex(24)
    return token, [f"--IdentityProvider.token={token}"]


def _start_lab(
    children: Children, args: argparse.Namespace, env: dict[str, str], home: Path
) -> tuple[Child, str, str]:
    lab = shutil.which("jupyter-lab", path=os.path.dirname(sys.executable)) or shutil.which(
        "jupyter-lab"
    )
    if lab is None:
        raise ConfigError("JupyterLab is not installed: pip install 'jupyter-gpumarket[lab]'")
    notebook_dir = (args.notebook_dir or _notebooks()).resolve()
    extra = [a for a in args.lab_args if a != "--"]
    token, token_args = _lab_token(extra)
    cmd = [
        lab,
        f"--ServerApp.ip={args.ip}",
        f"--ServerApp.port={args.port}",
        "--ServerApp.port_retries=0",  # the port we checked, or fail: never a surprise port
        f"--ServerApp.root_dir={notebook_dir}",
        f"--ServerApp.open_browser={args.open_browser}",
        "--MultiKernelManager.default_kernel_name=gpumarket",  # new notebooks run remote
        *token_args,
        *extra,
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--ServerApp.allow_root=True")
    log = home / "lab.log"
    print(f"starting JupyterLab on {notebook_dir} (log: {log}) ...", flush=True)
    child = children.start("lab", cmd, env={**os.environ, **env}, log=log)
    host = f"[{args.ip}]" if ":" in args.ip else args.ip
    return child, f"http://{host}:{args.port}", token


def _wait_lab(child: Child, base: str, token: str, timeout: float = 120.0) -> str:
    """Until JupyterLab answers with the gpumarket extension loaded; its URL with the token."""
    deadline = time.monotonic() + timeout
    while True:
        if child.proc.poll() is not None or time.monotonic() > deadline:
            tail = child.log.read_text(errors="replace")[-2000:] if child.log else ""
            raise AgentError(f"JupyterLab did not start; see {child.log}:\n{tail}")
        if _answers(f"{base}/gpumarket/health", token):
            return f"{base}/lab?token={token}"
        time.sleep(0.2)


def _answers(url: str, token: str) -> bool:
    """Whether the server answers ``url`` (the gpumarket extension's health route) with 200."""
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait(children: Children) -> int:
    """Until Ctrl-C (KeyboardInterrupt) or a child exits on its own: then 1."""
    while True:
        gone = children.exited()
        if gone is not None:
            print(f"{gone.name} exited (see {gone.log}); stopping the others", flush=True)
            return 1
        time.sleep(0.2)
