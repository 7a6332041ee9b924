"""GpuMarketProvisioner: a jupyter_client kernel provisioner whose kernel runs on a provider.

The KernelManager talks ZMQ to a loopback shim exactly as to a local kernel; the shim and the
websocket to the provider run in the kernel's own tunnel process (:mod:`.tunnelproc`, driven
through :mod:`.tunnel_client`), or on the server's tunnel thread (:mod:`.loop_thread`) when
``tunnel_process`` is off. Methods mirror
:class:`jupyter_client.provisioning.KernelProvisionerBase` (itself modelled on Popen); each says
who calls it. The work behind them lives beside it: provider selection and settings in
:mod:`.selection`, bringing the link up in :mod:`.launch`, the paid launch's failover in
:mod:`.failover`, file sync in :mod:`.files`, records for re-adoption in :mod:`.persist`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase
from traitlets import Bool, Float, Int, List, Unicode

import jupyter_gpumarket.provisioning.launch_flow as launch_flow
from jupyter_gpumarket.core.filesync import Manifest
from jupyter_gpumarket.core.kernel_args import check_kernel_args
from jupyter_gpumarket.core.launch_state import LaunchEventType
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError, PaymentError, ProtocolError
from jupyter_gpumarket.provisioning import files, launch, paid_state, persist, records, selection
from jupyter_gpumarket.provisioning.link import LinkSettings, ProviderTarget, RemoteLink
from jupyter_gpumarket.provisioning.loop_thread import call, carry_data_path, loop_thread
from jupyter_gpumarket.provisioning.selection import DEFAULT_ENV_ALLOW, forwarded_env
from jupyter_gpumarket.provisioning.selection_store import LaunchChoice, launch_choice
from jupyter_gpumarket.provisioning.shim import ZmqShim
from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient, TunnelShim, process_mode_env

if TYPE_CHECKING:  # the payment stack (web3, eth-*) loads only for paid kernels
    from jupyter_gpumarket.provisioning.failover import Attempt
    from jupyter_gpumarket.provisioning.paid_run import PaidRun

__all__ = ["GpuMarketProvisioner", "forwarded_env"]


class GpuMarketProvisioner(KernelProvisionerBase):
    """Launches the kernel on a GPU provider and exposes it through a loopback ZMQ shim."""

    provider_url = Unicode(
        "", config=True, help="wss:// URL of a provider agent (env GPUMARKET_PROVIDER_URL wins)"
    )
    dev_token = Unicode(
        "", config=True, help="token of a --dev provider (env GPUMARKET_DEV_TOKEN wins)"
    )
    tls_fingerprint = Unicode(
        "",
        config=True,
        help="sha256:<hex> of the provider's certificate (env GPUMARKET_TLS_FINGERPRINT wins)",
    )
    env_allow = List(
        Unicode(),
        default_value=list(DEFAULT_ENV_ALLOW),
        config=True,
        help="names of the server's environment variables the remote kernel may see",
    )
    launch_timeout = Float(120.0, config=True, help="seconds to wait for the remote kernel")
    link_grace_seconds = Float(
        120.0,
        config=True,
        help="seconds an unreachable provider is still treated as alive (no restart, no re-bill)",
    )

    sync_files = Bool(
        True, config=True, help="copy the notebook's directory to the remote working dir"
    )
    sync_cap_bytes = Int(
        500_000_000, config=True, help="largest notebook directory synced, and largest pull (bytes)"
    )
    pull_on_shutdown = Bool(
        True, config=True, help="bring files the kernel wrote back when it shuts down"
    )

    network = Unicode("", config=True, help="network profile (env GPUMARKET_NETWORK wins)")
    offer = Unicode(
        "",
        config=True,
        help="offer id or filter like policy=value,gpu=H100,min_vram=40000,verified=1 "
        "(GPUMARKET_OFFER; `gpumarket offers` shows what each filter picks)",
    )
    failover = Int(
        2,
        config=True,
        help="offers tried after the chosen one fails to launch (GPUMARKET_FAILOVER)",
    )
    budget = Int(10_000_000, config=True, help="most a lease may spend, token base units")
    wallet = Unicode("", config=True, help="keystore path (env GPUMARKET_WALLET wins)")
    grant = Unicode(
        "", config=True, help="credit-pool grant code: the pool pays the lease (GPUMARKET_GRANT)"
    )
    initial_hours = Float(
        1.0,
        config=True,
        help="deposit = min(budget, price x this many hours) (GPUMARKET_INITIAL_HOURS)",
    )
    auto_top_up = Bool(
        False,
        config=True,
        help="top the channel up (from the wallet, up to the budget) instead of stopping when "
        "its deposit runs low (GPUMARKET_AUTO_TOP_UP=1)",
    )

    confirm = Bool(
        True,
        config=True,
        help="wait for the user's confirmation of the cost before the wallet signs, when a UI "
        "watches the server's events (GPUMARKET_CONFIRM=0 never waits, =1 always)",
    )
    confirm_timeout = Float(300.0, config=True, help="seconds to wait for that confirmation")

    tunnel_process = Bool(
        True,
        config=True,
        help="run each remote kernel's shim and link in its own tunnel process instead of a "
        "thread of the server (GPUMARKET_TUNNEL_PROCESS=1/0 wins); a paid kernel's vouchers are "
        "still signed in the server, its process holds only the lease's session key",
    )

    _link: RemoteLink | TunnelClient | None = None
    _paid: PaidRun | None = None
    _cwd: Path | None = None
    _synced: Manifest | None = None
    last_push: files.PushResult | None = None
    _shim: ZmqShim | TunnelShim | None = None
    _key: str = ""
    _launch_env: dict[str, str] | None = None
    _choice: LaunchChoice | None = None  # the stored selection / pin / unlocked wallet
    _kernel_args: tuple[str, ...] = ()
    launch_attempts: list[Attempt]  # set by a paid launch: each offer tried, and how it ended

    # -- selection ---------------------------------------------------------------------------
    def _setting(self, env_name: str, trait_value: str) -> str:
        env = self._launch_env or {}
        chosen = self._choice.get(env_name) if self._choice is not None else None
        return chosen or os.environ.get(env_name) or env.get(env_name) or trait_value

    def _target(self) -> ProviderTarget:
        return selection.provider_target(
            self._setting, self.provider_url, self.tls_fingerprint, self.dev_token
        )

    # -- launch (called by KernelManager.start_kernel / restart_kernel) ----------------------
    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Called before launch_kernel; builds the (filtered) environment for the provider."""
        kwargs = await super().pre_launch(**kwargs)
        env = kwargs.get("env") or {}
        self._launch_env = dict(env)
        root = getattr(getattr(self.parent, "parent", None), "root_dir", None)
        self._choice = launch_choice(self.kernel_spec.metadata, self._launch_env, root)
        cwd = kwargs.get("cwd")
        self._cwd = Path(cwd) if cwd else None
        # KernelManager.start_kernel(extra_arguments=...) (nbclient, papermill): a local kernel
        # gets them after the spec's argv; the remote one gets them in start_kernel.
        extra = kwargs.pop("extra_arguments", None) or []
        try:
            self._kernel_args = check_kernel_args(list(extra), "extra_arguments")
        except ProtocolError as exc:
            raise ConfigError(f"{exc} (the kernel runs on a GPU provider)") from None
        kwargs["cmd"] = [*self.kernel_spec.argv, *self._kernel_args]
        launch_flow.begin(self)
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Connect (or reuse the link on restart), start the remote kernel, return shim info."""
        env = forwarded_env(self._launch_env or {}, self.kernel_spec.env or {}, self.env_allow)
        try:
            fresh = self._link is None and bool(self.kernel_id)
            record = records.load(self.kernel_id) if fresh else None
            if record is not None:
                info = await persist.reattach(self, record)
                launch_flow.ready(self)
                return info
            if self._paid is not None and self._paid.lease.stopped_for_budget:
                raise PaymentError(
                    f"{self._paid.lease.stopped_for_budget}; raise GPUMARKET_BUDGET "
                    "(or the provisioner's budget) and start a new kernel"
                )
            if self._link is None or self._link.dead_reason:
                await self._teardown(end_lease=True)
                self._key = secrets.token_hex(32)
                if selection.paid_selected(self._setting, self.provider_url, self.offer):
                    from jupyter_gpumarket.provisioning import failover

                    await failover.launch_paid_with_failover(self, env)
                    self._save_record()
                    launch_flow.ready(self)
                    return self._connection_info()
                else:
                    launch_flow.step(self, LaunchEventType.CONNECT)
                    await self._on_link(self._open(self._target()))
            elif self._paid is not None:
                self._paid.kernel_restarting()
            await self._start_remote(env, self._kernel_args)
        except BaseException as exc:
            await self._teardown(end_lease=True)
            if self._paid is not None and not self._paid.ever_ready:
                # nothing ran, nothing is owed; the provider settles at 0 if it saw the lease,
                # else `gpumarket leases close` gets the deposit back
                with contextlib.suppress(GpuMarketError):
                    await asyncio.to_thread(self._paid.lease.record_launch_failure, str(exc))
            outcome = launch_flow.failed(self, exc)
            if outcome is not exc:
                raise outcome from None
            raise
        self._save_record()
        launch_flow.ready(self)
        return self._connection_info()

    def _save_record(self) -> None:
        persist.save_record(self)

    def _connection_info(self) -> KernelConnectionInfo:
        assert self._shim is not None
        return launch.connection_info(
            self._shim, self._key, getattr(self.parent, "kernel_name", "gpumarket")
        )

    def _paid_settings(self) -> tuple[str, str, float]:
        """(wallet password, budget, initial hours), checked before any chain call."""
        return selection.paid_settings(self._setting, self.budget, self.initial_hours)

    async def _start_remote(self, env: dict[str, str], kernel_args: tuple[str, ...] = ()) -> None:
        """Sync the notebook's files and start the kernel on the open link."""
        assert self._link is not None
        link = self._link
        if self.sync_files and self._cwd is not None:
            launch_flow.step(self, LaunchEventType.SYNC_FILES)
            if isinstance(link, TunnelClient):
                result = await link.push_files(self._cwd, self.sync_cap_bytes, self.launch_timeout)
            else:
                result = await call(
                    files.push(
                        link,
                        self._cwd,
                        cap_bytes=self.sync_cap_bytes,
                        timeout=self.launch_timeout,
                        progress=self._progress,
                    )
                )
            self._synced, self.last_push = result.manifest, result
        launch_flow.step(self, LaunchEventType.START_KERNEL)
        await self._on_link(
            self._link.start_kernel(self._key, env, self.launch_timeout, kernel_args)
        )
        if self._paid is not None:
            loop_thread().loop.call_soon_threadsafe(self._paid.kernel_started)

    async def _open_paid(self, offer: Any = None) -> None:
        await launch.open_paid(self, offer)

    async def _open(
        self,
        target: ProviderTarget,
        adopt_lease: str | None = None,
        paid_run: PaidRun | None = None,
    ) -> None:
        """Shim + link, wired to each other: in a tunnel process (on the server's loop, see
        _on_link), else on the tunnel loop."""
        settings = LinkSettings(
            connect_timeout=min(30.0, self.launch_timeout), link_grace=self.link_grace_seconds
        )
        if self._process_mode():
            from jupyter_gpumarket.provisioning import tunnel_paid

            client = await TunnelClient.spawn(
                self.kernel_id or "",
                target,
                self.link_grace_seconds,
                on_notice=self._process_notice,
                on_progress=self._progress,
            )
            try:
                spec = None
                if paid_run is not None:
                    spec = tunnel_paid.pay_through(
                        client, paid_run, loop_thread().loop, self._process_notice
                    )
                ports = await client.open(self._key, settings, adopt_lease, spec)
            except BaseException:
                await client.close(end_lease=False)
                raise
            self._link, self._shim = client, TunnelShim(ports)
            if paid_run is not None:
                tunnel_paid.announce_unsandboxed(client, paid_run.lease)
            return
        carry_data_path()  # thread mode: this server's tunnel thread carries the data
        self._link, self._shim = await launch.open_link(
            target, self._key, settings, self.log, adopt_lease, paid_run, self._launch_notice
        )

    def _launch_notice(self, text: str) -> None:
        launch_flow.notice(self, text)

    def _process_notice(self, text: str) -> None:
        self.log.warning(text)
        launch_flow.notice(self, text)

    # -- where the link lives: a tunnel process, or the tunnel thread ----------------------
    def _process_mode(self) -> bool:
        """Whether a new link gets its own tunnel process (paid or not)."""
        env = process_mode_env()
        return self.tunnel_process if env is None else env

    async def _on_link(self, coro: Any) -> Any:
        """Await ``coro`` where the link lives: on this loop for a tunnel process (its client
        is this loop's), else on the tunnel thread."""
        if isinstance(self._link, TunnelClient) or (self._link is None and self._process_mode()):
            return await coro
        return await call(coro)

    # -- liveness (KernelManager, KernelRestarter) ------------------------------------------
    @property
    def has_process(self) -> bool:
        return self._link is not None and self._link.generation > 0

    async def poll(self) -> int | None:
        """None while the remote kernel runs — and while the link is down within the grace."""
        if self._link is None:
            return 0
        return self._link.exit_code

    async def wait(self) -> int | None:
        """Wait until the remote kernel has exited (or the link is declared dead)."""
        while True:
            code = await self.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)

    # -- signals (interrupt in signal mode, terminate, kill) --------------------------------
    def _call_soon(self, fn: Any, *args: Any) -> None:
        loop_thread().loop.call_soon_threadsafe(fn, *args)

    async def send_signal(self, signum: int) -> None:
        """Signal the remote kernel's process group (KernelManager.signal_kernel)."""
        if isinstance(self._link, TunnelClient) and signum != 0:
            self._link.signal(signum)
        elif self._link is not None and signum != 0:
            self._call_soon(self._link.signal, signum)

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return recommended + 2.0  # a round trip to the provider on top of the kernel's own

    # -- teardown ----------------------------------------------------------------------------
    async def cleanup(self, restart: bool = False) -> None:
        """After shutdown. On restart the link, lease, shim ports and key are kept."""
        if not restart:
            try:
                if self.pull_on_shutdown:
                    try:
                        await self.pull_files()
                    except (GpuMarketError, OSError) as exc:  # a full disk, a read-only dir
                        self.log.warning("files written by the remote kernel not pulled: %s", exc)
                if self._paid is not None:
                    try:
                        await call(self._paid.finish())
                    except GpuMarketError as exc:
                        self.log.warning("the lease's last voucher or record failed: %s", exc)
            finally:  # whatever failed above, the remote kernel and its lease end here
                await self._teardown(end_lease=True)
                if self.kernel_id:
                    records.forget(self.kernel_id)
                    paid_state.forget(self.kernel_id)
                launch_flow.ended(self)

    # -- files -------------------------------------------------------------------------------
    def _progress(self, text: str) -> None:
        self.log.info("gpumarket %s: %s", self.kernel_id, text)

    async def pull_files(self) -> dict[str, Any]:
        """Bring files the kernel created or changed back into the notebook's directory."""
        link, cwd = self._link, self._cwd
        if link is None or cwd is None or self._synced is None or link.dead_reason:
            return {"pulled": [], "conflicts": [], "skipped": "no live remote kernel dir"}
        if isinstance(link, TunnelClient):
            return await link.pull_files(
                cwd, self._synced, self.sync_cap_bytes, self.launch_timeout
            )
        plan = await call(
            files.pull(
                link,
                cwd,
                self._synced,
                cap_bytes=self.sync_cap_bytes,
                timeout=self.launch_timeout,
                progress=self._progress,
            )
        )
        return {
            "pulled": [item.local_path for item in plan.items],
            "conflicts": [c.message for c in plan.conflicts],
            "bytes": plan.total_bytes,
        }

    async def _teardown(self, *, end_lease: bool) -> None:
        link, shim = self._link, self._shim
        self._link = self._shim = None
        if isinstance(link, TunnelClient):
            await link.close(end_lease=end_lease)
        elif link is not None:
            await call(link.close(end_lease=end_lease))
        if isinstance(shim, ZmqShim):
            await call(shim.close())

    # -- telemetry ---------------------------------------------------------------------------
    def telemetry(self) -> list[dict[str, Any]]:
        """The provider's latest telemetry samples of this kernel, oldest first (``[]`` before
        the first, or with no live link). Callable from any thread (the server's handlers)."""
        link = self._link
        return [] if link is None else link.telemetry.to_json()

    # -- persistence (reattach after a server restart) ---------------------------------------
    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(persist.link_info(self._link))
        return info
