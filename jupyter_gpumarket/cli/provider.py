"""`gpumarket provider serve | stop | info | setup`: run or stop a provider agent, list GPUs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from jupyter_gpumarket.agent import isolation
from jupyter_gpumarket.cli import argtypes, provider_slices
from jupyter_gpumarket.core.offer_meta import DEFAULT_RELAY_FEE
from jupyter_gpumarket.exceptions import AgentError, ConfigError, GpuMarketError

log = logging.getLogger("jupyter_gpumarket.provider")

DEFAULT_STATE_DIR = Path("~/.gpumarket/provider")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    provider = sub.add_parser("provider", help="run a provider agent (rent out this machine)")
    psub = provider.add_subparsers(dest="provider_command", metavar="COMMAND", required=True)

    serve = psub.add_parser("serve", help="serve kernels over wss")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=argtypes.port, default=0, help="port (0 = pick a free one)")
    serve.add_argument("--dev", action="store_true", help="dev mode: no chain, token auth")
    serve.add_argument("--dev-token", help="token renters must present (dev mode; random if unset)")
    serve.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    serve.add_argument("--ready-file", type=Path, help="write {url, tls_fingerprint} JSON here")
    serve.add_argument("--max-kernels", type=argtypes.count("kernels"), default=4)
    serve.add_argument("--gpus-per-kernel", type=argtypes.count("GPUs", 64), default=1)
    serve.add_argument(
        "--gpus",
        default="all",
        help="GPUs to rent out: all (default), none, or indices like 0,2 (see `provider info`)",
    )
    provider_slices.add_arguments(serve)
    serve.add_argument(
        "--config", type=Path, help="TOML file with these settings (flags given here win)"
    )
    serve.add_argument(
        "--simulate-gpu",
        metavar="MODEL[xCOUNT]",
        help="demos/tests: CLAIM these GPUs without having them (e.g. H100x2); offers and "
        "probes say simulated, and the market's challenge catches it",
    )
    serve.add_argument(
        "--client-grace",
        type=argtypes.seconds(),
        default=120.0,
        help="seconds a kernel survives without its renter before it is stopped",
    )
    serve.add_argument(
        "--kernel-memory-mb",
        type=argtypes.megabytes(2**40),
        help="memory per kernel (a cgroup v2 memory.max where possible, else RLIMIT_AS)",
    )
    paid = serve.add_argument_group("paid provider (without --dev)")
    paid.add_argument("--network", help="network profile name or path (default: the active one)")
    paid.add_argument("--wallet", type=Path, help="keystore of the provider's wallet")
    paid.add_argument(
        "--price-per-hour", type=argtypes.price_per_hour, help="token base units per hour"
    )
    paid.add_argument("--region", default="local", help="region shown in the offer")
    paid.add_argument(
        "--voucher-interval",
        type=argtypes.int_in(1, 3600, "seconds between vouchers, 1 to 3600"),
        default=15,
        help="seconds between vouchers",
    )
    paid.add_argument(
        "--payment-grace",
        type=argtypes.seconds(),
        default=60.0,
        help="seconds without vouchers before stop",
    )
    paid.add_argument(
        "--kernel-deadline",
        type=argtypes.seconds(),
        default=None,
        help="seconds a lease may go without ever starting a kernel before it ends "
        "(default: 10 payment graces, at least 600)",
    )
    paid.add_argument(
        "--redeem-every",
        type=argtypes.seconds(),
        default=600.0,
        help="seconds between on-chain redemptions",
    )
    paid.add_argument(
        "--relay-fee",
        type=argtypes.relay_fee,
        default=DEFAULT_RELAY_FEE,
        help="token base units a renter without gas pays this provider for relaying its "
        "channel opening (openFor); published in the offer",
    )
    paid.add_argument(
        "--course-pool",
        type=argtypes.pool_id,
        help="serve only students of this course pool (0x + 64 hex); the offer is listed only "
        "to that course",
    )
    paid.add_argument(
        "--unpublish",
        action="store_true",
        help="deactivate the offer remembered in --state-dir and exit (serves nothing)",
    )
    serve.add_argument(
        "--kernel-python",
        default=sys.executable,
        help="Python that runs the kernels (needs ipykernel; default: the agent's)",
    )
    serve.add_argument(
        "--max-frame-mb",
        type=argtypes.megabytes(2048),
        default=256,
        help="largest message accepted",
    )
    serve.add_argument(
        "--replay-buffer-mb",
        type=argtypes.megabytes(2**20),
        default=64,
        help="kernel output kept per lease while its renter is disconnected",
    )
    isolation.add_arguments(serve)
    argtypes.retype(
        serve,
        kernel_cpus=argtypes.cpus,
        kernel_pids=argtypes.count("processes", 2**22),
        kernel_disk_mb=argtypes.megabytes(2**40),
        kernel_inodes=argtypes.kernel_inodes,
    )
    serve.set_defaults(func=_serve_or_unpublish, serve_parser=serve)

    stop = psub.add_parser(
        "stop", help="stop the agent serving from a state dir (it ends its leases, unpublishes)"
    )
    stop.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    stop.add_argument(
        "--timeout",
        type=argtypes.seconds(),
        default=30.0,
        help="seconds to wait for the agent to exit",
    )
    stop.set_defaults(func=_stop)

    info = psub.add_parser("info", help="print the GPUs this machine would rent out")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_info)

    setup = psub.add_parser("setup", help="create the kernel slot users (run once, as root)")
    setup.add_argument(
        "--slots", type=argtypes.count("slot users"), default=4, help="as many as --max-kernels"
    )
    setup.add_argument("--dry-run", action="store_true", help="print the commands only")
    setup.set_defaults(func=_setup)


def _serve_or_unpublish(args: argparse.Namespace) -> int:
    return _unpublish(args) if args.unpublish else _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.agent.gpu import detect_gpus, select_gpus
    from jupyter_gpumarket.agent.kernels import KernelSettings
    from jupyter_gpumarket.agent.server import AgentConfig, AgentServer
    from jupyter_gpumarket.chain.paths import gpumarket_home

    iso = isolation.resolve_isolation(
        mode=args.sandbox,
        egress=args.egress,
        limits=isolation.limits_from_args(args),
        state_dir=args.state_dir.expanduser(),
        hidden=(str(gpumarket_home()),),
        masked=(str(args.wallet.expanduser()),) if args.wallet else (),
        python=args.kernel_python,
        max_kernels=args.max_kernels,
    )
    log.info("kernel isolation: %s", iso.reason)
    if args.simulate_gpu:
        from jupyter_gpumarket.agent.gpu_sim import simulated_inventory

        inventory = simulated_inventory(args.simulate_gpu)
        log.warning("SIMULATED GPUs (--simulate-gpu): %s", inventory.reason)
    else:
        inventory = select_gpus(detect_gpus(), args.gpus)
    layout = provider_slices.layout(args, inventory, sandboxed=iso.sandbox is not None)
    paid = publisher = None
    if not args.dev:
        isolation.check_publishable(iso.sandbox is not None, args.unsafe_no_sandbox)
        isolation.check_port_guard(
            egress=args.egress,
            sandboxed=iso.sandbox is not None,
            can_guard=os.geteuid() == 0 and shutil.which("nft") is not None,
            unsafe=args.unsafe_no_sandbox,
        )
        paid, publisher = _paid(args, inventory, sandboxed=iso.sandbox is not None, layout=layout)
    token = args.dev_token or secrets.token_urlsafe(24)
    config = AgentConfig(
        state_dir=args.state_dir.expanduser(),
        host=args.host,
        port=args.port,
        dev=args.dev,
        dev_token=token if args.dev else None,
        paid=paid,
        max_kernels=args.max_kernels,
        gpu_indices=tuple(g.index for g in inventory.gpus),
        gpus_per_kernel=args.gpus_per_kernel,
        client_grace=args.client_grace,
        max_frame_bytes=args.max_frame_mb * 1024 * 1024,
        replay_limit_bytes=args.replay_buffer_mb * 1024 * 1024,
        ready_file=args.ready_file,
        kernel=KernelSettings(python=args.kernel_python, sandbox=iso.sandbox, limits=iso.limits),
        kernel_slots=iso.slots,
        info={
            "gpus_detected": inventory.to_json(),
            **iso.info(),
            "simulated": bool(args.simulate_gpu),
            **({"slice": layout.info()} if layout is not None else {}),
        },
        **provider_slices.agent_config(args, layout),
    )
    log.info("GPUs: %s", "CPU only" if inventory.cpu_only else len(inventory.gpus))
    _run(
        AgentServer(config),
        token,
        show_token=args.dev and args.dev_token is None,
        publisher=publisher,
    )
    return 0


def _paid(
    args: argparse.Namespace, inventory: Any, *, sandboxed: bool, layout: Any = None
) -> tuple[Any, Any]:
    """Payment terms and the offer publisher of a non-dev provider (chain + wallet)."""

    from jupyter_gpumarket.agent.payments import PaidTerms
    from jupyter_gpumarket.agent.publish import OfferPublisher
    from jupyter_gpumarket.core.offer_meta import offer_metadata

    if args.price_per_hour is None:
        raise ConfigError("a paid provider needs --price-per-hour (token base units per hour)")
    profile, contracts, account = _provider_chain(args)
    token, escrow, registry = profile.require_contracts()
    terms = PaidTerms(
        rpc_url=profile.rpc_url,
        chain_id=profile.chain_id,
        token=token,
        escrow=escrow,
        registry=registry,
        account=account,
        price_per_hour=args.price_per_hour,
        interval=args.voucher_interval,
        grace=args.payment_grace,
        redeem_every=args.redeem_every,
        relay_fee=args.relay_fee,
        course_pool=bytes.fromhex(args.course_pool[2:]) if args.course_pool else None,
        kernel_deadline=args.kernel_deadline,
        gpu_model=inventory.gpus[0].model if inventory.gpus else "CPU",
    )
    publisher = OfferPublisher(
        contracts,
        account,
        args.price_per_hour,
        args.region,
        inventory,
        1 if layout is not None else args.gpus_per_kernel,  # a slice is of one GPU
        # renters see it wherever the offer appears; an unsandboxed offer is labelled so
        metadata_uri=offer_metadata(
            isolation="sandboxed" if sandboxed else "unsandboxed",
            relay_fee=args.relay_fee,
            **({"simulated": 1} if getattr(args, "simulate_gpu", None) else {}),
            **({"course_pool": args.course_pool} if args.course_pool else {}),
            **(layout.terms.to_meta() if layout is not None else {}),
        ),
        state_dir=args.state_dir.expanduser(),  # remembers the offer: a restart reuses it
    )
    return terms, publisher


def _provider_chain(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(network profile, contracts, the provider's unlocked wallet) from --network/--wallet."""
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.keystore import load_account
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile

    profile = load_profile(args.network) if args.network else active_profile()
    token, escrow, registry = profile.require_contracts()
    password = os.environ.get("GPUMARKET_WALLET_PASSWORD")
    if password is None:
        raise ConfigError("set GPUMARKET_WALLET_PASSWORD to unlock the provider's wallet")
    account = load_account(password, args.wallet.expanduser() if args.wallet else None)
    return profile, Contracts.bound(connect(profile.rpc_url), token, escrow, registry), account


def _unpublish(args: argparse.Namespace) -> int:
    """`provider serve --unpublish`: deactivate the remembered offer, serve nothing."""
    from jupyter_gpumarket.agent.pidfile import running_pid
    from jupyter_gpumarket.agent.publish import unpublish_remembered

    if args.dev:
        raise ConfigError("--unpublish is for paid providers: a --dev provider publishes nothing")
    state_dir = args.state_dir.expanduser()
    _profile, contracts, account = _provider_chain(args)
    print(unpublish_remembered(contracts, account, state_dir), flush=True)
    pid = running_pid(state_dir)
    if pid is not None:
        print(
            f"the agent (pid {pid}) still serves its current leases from {state_dir}; "
            f"`gpumarket provider stop --state-dir {state_dir}` ends it",
            flush=True,
        )
    return 0


def _stop(args: argparse.Namespace) -> int:
    """`provider stop`: SIGTERM the agent of --state-dir and wait until it has exited."""
    from jupyter_gpumarket.agent.pidfile import StopOutcome, stop_agent

    state_dir = args.state_dir.expanduser()
    outcome, found = stop_agent(
        state_dir, timeout=args.timeout, progress=lambda line: print(line, flush=True)
    )
    if outcome is StopOutcome.NOT_RUNNING:
        raise AgentError(
            f"no provider agent is running from {state_dir} (no {found.path}); "
            "pass the --state-dir it was started with"
        )
    if outcome is StopOutcome.STALE:
        raise AgentError(
            f"no provider agent is running from {state_dir}: removed the stale {found.path} "
            f"(pid {found.pid} ended without removing it; its offer may still be published: "
            "`gpumarket provider serve --unpublish` takes it down)"
        )
    if outcome is StopOutcome.STILL_RUNNING:
        raise AgentError(
            f"the agent (pid {found.pid}) is still running after {args.timeout:g} s; run "
            f"`gpumarket provider stop` again to wait longer, or `kill -KILL {found.pid}`"
        )
    print(f"provider agent (pid {found.pid}) stopped", flush=True)
    return 0


def _run(server: Any, token: str, *, show_token: bool, publisher: Any = None) -> None:
    from jupyter_gpumarket.agent.pidfile import hold_pid_file

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # `provider stop` finds the agent through this file (removed when we exit)
        with hold_pid_file(server.config.state_dir):
            await serve_until(stop)

    async def serve_until(stop: asyncio.Event) -> None:
        await server.start()
        print(f"url {server.url}", flush=True)
        print(f"fingerprint {server.cert.fingerprint}", flush=True)
        if publisher is not None:
            offer_id = await asyncio.to_thread(
                publisher.publish, server.url, server.cert.fingerprint
            )
            print(f"offer {offer_id}", flush=True)
            server.write_ready_file(offer_id=offer_id, offer_action=publisher.plan.action.value)
        if show_token:
            print(f"dev-token {token}", flush=True)
        await stop.wait()
        log.info("stopping: ending %d lease(s)", len(server.leases))
        if publisher is not None:
            try:
                await asyncio.to_thread(publisher.unpublish)
            except GpuMarketError as exc:
                log.warning("could not deactivate the offer: %s", exc)
        await server.stop()

    runner(main())


def _setup(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.agent.sandbox import sandbox_available

    for line in isolation.setup_slots(args.slots, dry_run=args.dry_run):
        print(("would run: " if args.dry_run else "ran: ") + line)
    ok, reason = sandbox_available()
    print(f"sandbox: {'ok' if ok else 'NOT available'} ({reason})")
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from jupyter_gpumarket.agent.gpu import detect_gpus, format_inventory

    inventory = detect_gpus()
    print(json.dumps(inventory.to_json(), indent=2) if args.json else format_inventory(inventory))
    return 0
