"""GpuMarketProvisioner: a jupyter_client kernel provisioner whose kernel runs on a provider.

The KernelManager talks ZMQ to a loopback shim exactly as to a local kernel; the shim and the
websocket to the provider run on the tunnel thread (:mod:`.loop_thread`). Methods mirror
:class:`jupyter_client.provisioning.KernelProvisionerBase` (itself modelled on Popen); each says
who calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase
from traitlets import Bool, Float, Int, List, Unicode

from jupyter_gpumarket.core.filesync import Manifest
from jupyter_gpumarket.core.kernel_args import check_kernel_args
from jupyter_gpumarket.core.pinning import normalize_fingerprint
from jupyter_gpumarket.exceptions import (
    ConfigError,
    GpuMarketError,
    NoProviderSelected,
    PaymentError,
    ProtocolError,
)
from jupyter_gpumarket.provisioning import files, paid_state, records
from jupyter_gpumarket.provisioning.link import LinkSettings, ProviderTarget, RemoteLink
from jupyter_gpumarket.provisioning.loop_thread import call, loop_thread
from jupyter_gpumarket.provisioning.shim import ZmqShim

if TYPE_CHECKING:  # the payment stack (web3, eth-*) loads only for paid kernels
    from jupyter_gpumarket.provisioning import paid

__all__ = ["GpuMarketProvisioner", "forwarded_env"]

# What of the Jupyter server's environment a remote kernel gets, besides the kernelspec's own
# `env` entries. The server's environment is never forwarded wholesale: it holds tokens, cloud
# credentials and wallet passwords.
DEFAULT_ENV_ALLOW = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "JPY_SESSION_NAME")


def forwarded_env(
    env: dict[str, str], spec_env: dict[str, str], allow: list[str] | tuple[str, ...]
) -> dict[str, str]:
    """The part of the launch environment that is sent to the provider."""
    names = set(allow) | set(spec_env)
    return {k: v for k, v in env.items() if k in names and not k.startswith("GPUMARKET_")}


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

    _link: RemoteLink | None = None
    _paid: paid.PaidRun | None = None
    _cwd: Path | None = None
    _synced: Manifest | None = None
    last_push: files.PushResult | None = None
    _shim: ZmqShim | None = None
    _key: str = ""
    _launch_env: dict[str, str] | None = None
    _kernel_args: tuple[str, ...] = ()

    # -- selection ---------------------------------------------------------------------------
    def _setting(self, env_name: str, trait_value: str) -> str:
        env = self._launch_env or {}
        return os.environ.get(env_name) or env.get(env_name) or trait_value

    def _target(self) -> ProviderTarget:
        url = self._setting("GPUMARKET_PROVIDER_URL", self.provider_url)
        if not url:
            raise NoProviderSelected(
                "no GPU provider selected for this kernel. To rent an offer: set "
                "GPUMARKET_NETWORK (a network profile, e.g. devnet; `gpumarket network list`) "
                "and GPUMARKET_OFFER (an offer id, or a filter such as "
                "region=eu,max_price=2500000), with GPUMARKET_WALLET_PASSWORD and "
                "GPUMARKET_BUDGET. For a dev provider: set GPUMARKET_PROVIDER_URL, "
                "GPUMARKET_DEV_TOKEN and GPUMARKET_TLS_FINGERPRINT (printed by "
                "`gpumarket provider serve --dev`). Both are also GpuMarketProvisioner traits "
                "in the Jupyter config"
            )
        if urlparse(url).scheme != "wss":
            raise ConfigError(f"provider URL {url!r} must start with wss:// (the tunnel is TLS)")
        pin = self._setting("GPUMARKET_TLS_FINGERPRINT", self.tls_fingerprint)
        if not pin:
            raise ConfigError(
                f"no TLS fingerprint for {url}: set GPUMARKET_TLS_FINGERPRINT to the "
                "'fingerprint sha256:…' the provider printed (also in its --ready-file)"
            )
        token = self._setting("GPUMARKET_DEV_TOKEN", self.dev_token)
        return ProviderTarget(url, normalize_fingerprint(pin), token)

    # -- launch (called by KernelManager.start_kernel / restart_kernel) ----------------------
    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Called before launch_kernel; builds the (filtered) environment for the provider."""
        kwargs = await super().pre_launch(**kwargs)
        env = kwargs.get("env") or {}
        self._launch_env = dict(env)
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
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Connect (or reuse the link on restart), start the remote kernel, return shim info."""
        env = forwarded_env(self._launch_env or {}, self.kernel_spec.env or {}, self.env_allow)
        try:
            fresh = self._link is None and bool(self.kernel_id)
            record = records.load(self.kernel_id) if fresh else None
            if record is not None:
                return await self._reattach(record)
            if self._paid is not None and self._paid.lease.stopped_for_budget:
                raise PaymentError(
                    f"{self._paid.lease.stopped_for_budget}; raise GPUMARKET_BUDGET "
                    "(or the provisioner's budget) and start a new kernel"
                )
            if self._link is None or self._link.dead_reason:
                await self._teardown(end_lease=True)
                self._key = secrets.token_hex(32)
                if self._paid_selection():
                    await self._launch_paid_with_failover(env)
                    self._save_record()
                    return self._connection_info()
                else:
                    await call(self._open(self._target()))
            elif self._paid is not None:
                self._paid.kernel_restarting()
            assert self._link is not None
            if self.sync_files and self._cwd is not None:
                result = await call(
                    files.push(
                        self._link,
                        self._cwd,
                        cap_bytes=self.sync_cap_bytes,
                        timeout=self.launch_timeout,
                        progress=self._progress,
                    )
                )
                self._synced, self.last_push = result.manifest, result
            await call(
                self._link.start_kernel(self._key, env, self.launch_timeout, self._kernel_args)
            )
            if self._paid is not None:
                loop_thread().loop.call_soon_threadsafe(self._paid.kernel_started)
        except BaseException as exc:
            await self._teardown(end_lease=True)
            if self._paid is not None and not self._paid.ever_ready:
                # nothing ran, nothing is owed; the provider settles at 0 if it saw the lease,
                # else `gpumarket leases close` gets the deposit back
                with contextlib.suppress(GpuMarketError):
                    await asyncio.to_thread(self._paid.lease.record_launch_failure, str(exc))
            raise
        self._save_record()
        return self._connection_info()

    async def _reattach(self, record: records.KernelRecord) -> KernelConnectionInfo:
        """A restarted Jupyter server takes over a remote kernel that kept running (a paid
        one keeps paying from the same channel, with its saved session key)."""
        target = ProviderTarget(record.provider_url, record.tls_fingerprint, record.token)
        self._key = record.key
        if record.cwd:
            self._cwd = Path(record.cwd)
        try:
            state = paid_state.load(self.kernel_id)
            if state is not None:
                await self._resume_paid(state)
            await call(self._open(target, adopt_lease=record.lease, paid_run=self._paid))
        except BaseException:
            await self._teardown(end_lease=False)
            records.forget(self.kernel_id)
            paid_state.forget(self.kernel_id)
            raise
        if self._paid is not None:  # the kernel kept running (and billing) all along
            loop_thread().loop.call_soon_threadsafe(self._paid.kernel_started)
        self.log.info("re-adopted remote kernel %s (lease %s)", self.kernel_id, record.lease)
        self._save_record()
        return self._connection_info()

    async def _resume_paid(self, state: paid_state.PaidState) -> None:
        password = self._setting("GPUMARKET_WALLET_PASSWORD", "")
        if not password:
            raise ConfigError(
                "set GPUMARKET_WALLET_PASSWORD so the restarted server can keep paying for "
                f"kernel {self.kernel_id} (its lease's deposit comes back with `gpumarket "
                "leases close` otherwise)"
            )
        from jupyter_gpumarket.provisioning import paid  # web3 only for paid kernels

        lease = await asyncio.to_thread(paid.resume_paid_lease, state, password)
        self._paid = paid.PaidRun(lease)
        self._bind_persist(lease)

    def _bind_persist(self, lease: Any) -> None:
        kernel_id = self.kernel_id
        if kernel_id:
            lease.persist = lambda: paid_state.save(lease.snapshot(kernel_id))

    def _save_record(self) -> None:
        link = self._link
        if link is None or not self.kernel_id or link.lease is None:
            return
        if self._paid is not None:
            self._paid.lease.persist_now()
        records.save(
            records.KernelRecord(
                kernel_id=self.kernel_id,
                kernel_name=getattr(self.parent, "kernel_name", "gpumarket"),
                provider_url=link.target.url,
                tls_fingerprint=link.target.tls_fingerprint,
                token=link.target.token,
                lease=link.lease,
                key=self._key,
                cwd=str(self._cwd) if self._cwd else None,
                connection_file=getattr(self.parent, "connection_file", None),
                server_pid=os.getpid(),
                created=time.time(),
            )
        )

    def _connection_info(self) -> KernelConnectionInfo:
        assert self._shim is not None
        ports = self._shim.ports
        return {
            "transport": "tcp",
            "ip": "127.0.0.1",
            "shell_port": ports["shell_port"],
            "iopub_port": ports["iopub_port"],
            "stdin_port": ports["stdin_port"],
            "control_port": ports["control_port"],
            "hb_port": ports["hb_port"],
            # bytes, as LocalProvisioner returns it (the TypedDict says str)
            "key": self._key.encode(),  # type: ignore[typeddict-item]
            "signature_scheme": "hmac-sha256",
            "kernel_name": getattr(self.parent, "kernel_name", "gpumarket"),
        }

    def _paid_selection(self) -> bool:
        """A market offer is selected (and no direct provider URL overrides it)."""
        if self._setting("GPUMARKET_PROVIDER_URL", self.provider_url):
            return False
        return bool(self._setting("GPUMARKET_OFFER", self.offer))

    def _paid_settings(self) -> tuple[str, str, float]:
        """(wallet password, budget, initial hours), checked before any chain call."""
        password = self._setting("GPUMARKET_WALLET_PASSWORD", "")
        budget = self._setting("GPUMARKET_BUDGET", str(self.budget))
        if not password:
            raise ConfigError("set GPUMARKET_WALLET_PASSWORD to unlock your wallet for this lease")
        if not budget.isdigit() or int(budget) <= 0:
            raise ConfigError(f"budget {budget!r} must be a positive number of token base units")
        hours_text = self._setting("GPUMARKET_INITIAL_HOURS", str(self.initial_hours))
        try:
            initial_hours = float(hours_text)
        except ValueError:
            initial_hours = -1.0
        if not 0 < initial_hours < 10_000:
            raise ConfigError(
                f"initial hours {hours_text!r} must be a positive number of hours of deposit"
            )
        return password, budget, initial_hours

    async def _launch_paid_with_failover(self, env: dict[str, str]) -> None:
        """Rank the live candidates, then launch on the best; when its provider refuses or
        fails before the kernel is ready, the next one (``failover`` more at most). A failed
        attempt is never billed (billing starts at ready) and is recorded as such."""
        from jupyter_gpumarket.provisioning import failover as fo

        self._paid_settings()  # a missing password fails before the chain is read
        extra = fo.parse_failover(self._setting("GPUMARKET_FAILOVER", str(self.failover)))
        self._progress("finding offer (index, live probes, ranking)")
        offers = await asyncio.to_thread(
            fo.paid_candidates,
            self._setting("GPUMARKET_NETWORK", self.network),
            self._setting("GPUMARKET_OFFER", self.offer),
        )
        offers = offers[: extra + 1]
        self.launch_attempts: list[fo.Attempt] = []
        for n, offer in enumerate(offers, 1):
            self._progress(
                f"launch attempt {n}/{len(offers)}: offer {offer.offer_id} at {offer.endpoint}"
            )
            try:
                await self._open_paid(offer)
                await self._start_remote(env)
            except BaseException as exc:
                paid_run, self._paid = self._paid, None
                await self._teardown(end_lease=True)
                if paid_run is not None and not paid_run.ever_ready:
                    with contextlib.suppress(GpuMarketError):
                        await asyncio.to_thread(paid_run.lease.record_launch_failure, str(exc))
                reason = str(exc)[:300] or type(exc).__name__
                self.launch_attempts.append(
                    fo.Attempt(n, offer.offer_id, offer.endpoint, f"failed: {reason}")
                )
                if n == len(offers) or not fo.retryable(exc):
                    raise
                self.log.warning(
                    "gpumarket %s: offer %s failed during launch (%s); trying the next "
                    "candidate, nothing was billed",
                    self.kernel_id,
                    offer.offer_id,
                    reason,
                )
                continue
            self.launch_attempts.append(fo.Attempt(n, offer.offer_id, offer.endpoint, "ok"))
            return

    async def _start_remote(self, env: dict[str, str]) -> None:
        """Sync the notebook's files and start the kernel on the open link."""
        assert self._link is not None
        if self.sync_files and self._cwd is not None:
            result = await call(
                files.push(
                    self._link,
                    self._cwd,
                    cap_bytes=self.sync_cap_bytes,
                    timeout=self.launch_timeout,
                    progress=self._progress,
                )
            )
            self._synced, self.last_push = result.manifest, result
        await call(self._link.start_kernel(self._key, env, self.launch_timeout))
        if self._paid is not None:
            loop_thread().loop.call_soon_threadsafe(self._paid.kernel_started)

    async def _open_paid(self, offer: Any = None) -> None:
        """Open the escrow channel for ``offer`` (else the one GPUMARKET_OFFER picks; chain, in
        a thread), connect with it."""
        password, budget, initial_hours = self._paid_settings()
        from jupyter_gpumarket.provisioning import paid  # web3 only for paid kernels

        self._progress("opening an escrow channel")
        lease = await asyncio.to_thread(
            paid.open_paid_lease,
            network=self._setting("GPUMARKET_NETWORK", self.network),
            offer_spec=self._setting("GPUMARKET_OFFER", self.offer),
            budget=int(budget),
            wallet=self._setting("GPUMARKET_WALLET", self.wallet) or None,
            password=password,
            grant=self._setting("GPUMARKET_GRANT", self.grant),
            auto_top_up=self._setting(
                "GPUMARKET_AUTO_TOP_UP", "1" if self.auto_top_up else ""
            ).lower()
            in ("1", "true", "yes"),
            initial_hours=initial_hours,
            offer=offer,
        )
        self._paid = paid.PaidRun(lease)
        self._bind_persist(lease)
        offer = lease.offer
        target = ProviderTarget(offer.endpoint, normalize_fingerprint(offer.tls_fingerprint), "")
        self._progress(f"connecting to offer {offer.offer_id} at {offer.endpoint}")
        await call(self._open(target, paid_run=self._paid))

    async def _open(
        self,
        target: ProviderTarget,
        adopt_lease: str | None = None,
        paid_run: paid.PaidRun | None = None,
    ) -> None:
        """On the tunnel loop: shim + link, wired to each other."""
        settings = LinkSettings(
            connect_timeout=min(30.0, self.launch_timeout), link_grace=self.link_grace_seconds
        )
        shim: ZmqShim | None = None
        key = self._key.encode()

        def notice(text: str) -> None:
            self.log.warning(text)
            if shim is not None:
                shim.notify(text, key)

        link = RemoteLink(
            target,
            lambda ch, parts: shim.deliver(ch, parts),  # type: ignore[union-attr]
            settings,
            on_notice=notice,
            adopt_lease=adopt_lease,
            paid=paid_run.lease if paid_run is not None else None,
        )
        if paid_run is not None:
            paid_run.bind(link, notice)
        shim = ZmqShim(link.send)
        if paid_run is not None and paid_run.lease.offer.unsandboxed:
            shim.announce(paid_run.lease.offer.unsandboxed_warning, key)
        try:
            await link.open()
        except BaseException:
            await shim.close()
            await link.close(end_lease=False)
            raise
        self._link, self._shim = link, shim

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
        if self._link is not None and signum != 0:
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

    # -- files -------------------------------------------------------------------------------
    def _progress(self, text: str) -> None:
        self.log.info("gpumarket %s: %s", self.kernel_id, text)

    async def pull_files(self) -> dict[str, Any]:
        """Bring files the kernel created or changed back into the notebook's directory."""
        link, cwd = self._link, self._cwd
        if link is None or cwd is None or self._synced is None or link.dead_reason:
            return {"pulled": [], "conflicts": [], "skipped": "no live remote kernel dir"}
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
        if link is not None:
            await call(link.close(end_lease=end_lease))
        if shim is not None:
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
        link = self._link
        if link is not None:
            info.update(
                {
                    "provider_url": link.target.url,
                    "tls_fingerprint": link.target.tls_fingerprint,
                    "lease": link.lease,
                    "generation": link.generation,
                }
            )
        return info
