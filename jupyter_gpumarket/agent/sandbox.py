"""Kernel sandbox: the bubblewrap (``bwrap``) command line that isolates one kernel.

:func:`build_bwrap_argv` is pure: a frozen :class:`SandboxPolicy` (the provider's choices) plus a
:class:`SandboxMounts` (this kernel's dirs, GPU nodes and uid) give the argv; nothing is touched.
The kernel sees a read-only view of the system, with the agent's state dir, home dirs and other
private places covered by empty tmpfs; its own working dir and ipc runtime dir bound read-write
at the same paths as on the host (the agent connects to the ipc sockets by those paths); a private
``/tmp``; ``/dev`` with only the allotted GPUs' nodes; its own PID, IPC and UTS namespaces (and
network namespace when ``egress="none"``).

Two ways to drop privileges, chosen by who runs the agent:

- **agent is root** (a real provider): bwrap runs privileged and, inside, ``setpriv`` switches to
  the lease slot's unprivileged uid with no capabilities and ``no_new_privs``; a seccomp filter
  (:mod:`jupyter_gpumarket.agent.seccomp`) keeps the kernel from creating user namespaces;
- **agent is not root** (dev): bwrap runs unprivileged in a user namespace and further user
  namespaces are disabled; the kernel keeps the agent's uid but sees none of its files.

:func:`sandbox_available` and :func:`gpu_device_nodes` are the two small I/O probes;
:func:`lock_runtime` fixes a root-mode kernel's sockets once it has bound them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from stat import S_ISSOCK

from jupyter_gpumarket.agent.kernel_env import LAUNCHER_ENV
from jupyter_gpumarket.agent.seccomp import userns_filter_fd
from jupyter_gpumarket.exceptions import ConfigError, KernelLaunchError

__all__ = [
    "EGRESS_MODES",
    "SYSTEM_HIDDEN",
    "SandboxMounts",
    "SandboxPolicy",
    "build_bwrap_argv",
    "default_policy",
    "gpu_device_nodes",
    "lock_runtime",
    "python_paths",
    "sandbox_available",
]

EGRESS_MODES = ("full", "none")
# Covered by an empty tmpfs in every sandbox: other users' files, sockets of system daemons.
SYSTEM_HIDDEN = ("/root", "/home", "/run", "/var/run", "/var/tmp", "/mnt", "/media", "/srv")
# The nodes every CUDA process needs besides its own /dev/nvidia<i>.
_GPU_SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def _abs(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ConfigError(f"{what} must be an absolute path, got {value!r}")
    return os.path.normpath(value)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class SandboxPolicy:
    """What every kernel of this provider may see and reach.

    ``hidden``: paths covered by an empty tmpfs (the state dir, homes, daemon sockets).
    ``expose``: paths bound read-only again after hiding (the Python the kernel runs on).
    ``masked``: files replaced by an empty one (the wallet, wherever its path points).
    ``tmp_bytes``: size of the kernel's private ``/tmp`` (tmpfs), None = the kernel's default.
    """

    egress: str = "full"
    hidden: tuple[str, ...] = SYSTEM_HIDDEN
    expose: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    tmp_bytes: int | None = None
    bwrap: str = "bwrap"
    setpriv: str = "setpriv"

    def __post_init__(self) -> None:
        if self.egress not in EGRESS_MODES:
            raise ConfigError(f"egress must be one of {', '.join(EGRESS_MODES)}: {self.egress!r}")
        object.__setattr__(self, "hidden", tuple(_abs(p, "sandbox hidden") for p in self.hidden))
        object.__setattr__(self, "expose", tuple(_abs(p, "sandbox expose") for p in self.expose))
        object.__setattr__(self, "masked", tuple(_abs(p, "sandbox masked") for p in self.masked))
        if "/" in self.hidden:
            raise ConfigError("the sandbox cannot hide /: hide the private dirs instead")
        if self.tmp_bytes is not None and (
            not isinstance(self.tmp_bytes, int) or self.tmp_bytes <= 0
        ):
            raise ConfigError(f"sandbox tmp_bytes must be a positive int, got {self.tmp_bytes!r}")


@dataclass(frozen=True)
class SandboxMounts:
    """One kernel's part of the sandbox: its dirs, GPU nodes and (agent is root) its uid/gid."""

    workdir: str
    runtime: str
    devices: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "workdir", _abs(str(self.workdir), "sandbox workdir"))
        object.__setattr__(self, "runtime", _abs(str(self.runtime), "sandbox runtime dir"))
        object.__setattr__(self, "devices", tuple(_abs(d, "device node") for d in self.devices))
        for d in self.devices:
            if not d.startswith("/dev/"):
                raise ConfigError(f"device node {d!r} is not under /dev")
        if (self.uid is None) != (self.gid is None):
            raise ConfigError("sandbox uid and gid go together: give both or neither")
        for name in ("uid", "gid"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ConfigError(f"sandbox {name} must be an unprivileged id (> 0), got {v!r}")


def _parents_below(path: str, roots: Iterable[str]) -> list[str]:
    """Ancestors of ``path`` strictly inside the deepest of ``roots`` that holds it (top first)."""
    holders = [r for r in roots if _under(path, r) and path != r]
    if not holders:
        return []
    root = max(holders, key=len)
    parts = PurePosixPath(path).relative_to(root).parts[:-1]
    out, cur = [], PurePosixPath(root)
    for part in parts:
        cur = cur / part
        out.append(str(cur))
    return out


def build_bwrap_argv(
    policy: SandboxPolicy,
    mounts: SandboxMounts,
    command: Sequence[str],
    *,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The full argv (bwrap ... -- [setpriv ... --] command) for one sandboxed kernel.

    ``seccomp_fd``: an fd holding :func:`~jupyter_gpumarket.agent.seccomp.userns_filter`'s
    program, which bwrap loads (root mode: the kernel cannot create user namespaces).
    """
    if not command:
        raise ConfigError("the sandboxed command is empty")
    if seccomp_fd is not None and (not isinstance(seccomp_fd, int) or seccomp_fd < 0):
        raise ConfigError(f"seccomp_fd must be a file descriptor, got {seccomp_fd!r}")
    argv = [policy.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # Hide (shallowest first; a path under another hidden one or under /tmp is already gone).
    hidden = sorted(set(policy.hidden) | {"/tmp"}, key=lambda p: (p.count("/"), p))
    tmpfs_roots: list[str] = []
    for path in hidden:
        if any(_under(path, r) for r in tmpfs_roots):
            continue
        if path == "/tmp":
            if policy.tmp_bytes is not None:
                argv += ["--size", str(policy.tmp_bytes)]
            argv += ["--perms", "1777", "--tmpfs", "/tmp"]
        else:
            argv += ["--tmpfs", path]
        tmpfs_roots.append(path)
    # bwrap creates the missing parents of a bind with the host parents' modes (often 0700):
    # make the ones it creates inside a tmpfs traversable, so the kernel reaches its own dirs.
    created: list[str] = []

    def bind(kind: str, path: str) -> None:
        for parent in _parents_below(path, tmpfs_roots):
            if parent not in created:
                argv.extend(["--perms", "0755", "--dir", parent])
                created.append(parent)
        argv.extend([kind, path, path])

    for path in policy.expose:
        if any(_under(path, r) for r in tmpfs_roots):
            bind("--ro-bind", path)
    # Hidden paths that an exposed tree brought back (state dir inside the Python's home).
    for path in hidden:
        if path != "/tmp" and any(_under(path, e) and path != e for e in policy.expose):
            argv += ["--tmpfs", path]
    for path in policy.masked:
        if not any(_under(path, r) for r in tmpfs_roots):  # else already gone
            argv += ["--ro-bind", "/dev/null", path]
    bind("--bind", mounts.runtime)
    bind("--bind", mounts.workdir)
    for dev in mounts.devices:
        argv += ["--dev-bind", dev, dev]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if policy.egress == "none":
        argv.append("--unshare-net")
    argv += ["--hostname", "gpumarket", "--die-with-parent", "--new-session"]
    argv += ["--chdir", mounts.workdir]
    if mounts.uid is None:
        # Unprivileged bwrap: a user namespace, and no nested ones for the kernel.
        argv += ["--unshare-user", "--disable-userns"]
        if seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        return [*argv, "--", *command]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--", policy.setpriv]
    argv += [f"--reuid={mounts.uid}", f"--regid={mounts.gid}", "--clear-groups"]
    argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return [*argv, *command]


def python_paths(python: str = sys.executable) -> tuple[str, ...]:
    """The trees a kernel's Python needs (prefixes and the interpreter's real location)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    # the venv the kernel's Python sits in, and the interpreter its symlink points to
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(python))))
    paths.add(str(Path(python).resolve().parent.parent))
    # this package itself (the environment shim and telemetry_view run inside the sandbox): in
    # site-packages it is under a prefix already; an editable install elsewhere (a checkout
    # under /home or /tmp, which the sandbox hides) must be exposed on its own, read-only
    paths.add(str(Path(__file__).resolve().parent.parent))
    return tuple(sorted(os.path.normpath(p) for p in paths))


def default_policy(
    state_dir: Path,
    *,
    egress: str = "full",
    tmp_bytes: int | None = None,
    python: str = sys.executable,
    extra_hidden: Sequence[str] = (),
    masked: Sequence[str] = (),
) -> SandboxPolicy:
    """The provider's policy: hide the system's private dirs, the state dir and the agent's home,
    mask the secret files in ``masked`` that exist."""
    hidden = {*SYSTEM_HIDDEN, *extra_hidden, str(state_dir.resolve()), str(Path.home().resolve())}
    hidden.discard("/")
    # bwrap cannot mount over a symlink (/var/run -> /run) or a missing dir.
    hidden = {p for p in hidden if os.path.isdir(p) and not os.path.islink(p)}
    return SandboxPolicy(
        egress=egress,
        hidden=tuple(sorted(hidden)),
        expose=python_paths(python),
        masked=tuple(sorted({os.path.realpath(p) for p in masked if os.path.isfile(p)})),
        tmp_bytes=tmp_bytes,
        bwrap=shutil.which("bwrap") or "bwrap",
        setpriv=shutil.which("setpriv") or "setpriv",
    )


def gpu_device_nodes(gpus: Sequence[int], dev: Path = Path("/dev")) -> tuple[str, ...]:
    """The NVIDIA device nodes for ``gpus`` that exist on this machine (none on a CPU box)."""
    if not gpus:
        return ()
    names = [f"nvidia{i}" for i in gpus] + list(_GPU_SHARED_NODES)
    return tuple(str(dev / n) for n in names if (dev / n).exists())


def sandbox_available(bwrap: str | None = None, timeout: float = 10.0) -> tuple[bool, str]:
    """Whether bwrap is installed and can build a kernel's sandbox here, and why not if not.

    Runs ``true`` in the same kind of sandbox a kernel gets (as root: dropping to ``nobody``
    through setpriv), so a missing feature shows here rather than at the first kernel.
    """
    path = bwrap or shutil.which("bwrap")
    if path is None:
        return False, "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    setpriv = shutil.which("setpriv")
    root = os.geteuid() == 0
    if root and setpriv is None:
        return False, "setpriv (util-linux) is missing: install util-linux"
    with tempfile.TemporaryDirectory(prefix="gpm-probe-") as tmp:
        work, runtime = Path(tmp, "work"), Path(tmp, "run")
        work.mkdir()
        runtime.mkdir()
        nobody = 65534 if root else None
        policy = SandboxPolicy(hidden=(), bwrap=path, setpriv=setpriv or "setpriv")
        mounts = SandboxMounts(str(work), str(runtime), uid=nobody, gid=nobody)
        fd = userns_filter_fd() if root else None
        try:
            res = subprocess.run(
                build_bwrap_argv(policy, mounts, ["true"], seccomp_fd=fd),
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env=dict(LAUNCHER_ENV),
                pass_fds=() if fd is None else (fd,),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"bwrap could not run: {exc}"
        finally:
            if fd is not None:
                os.close(fd)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip() or f"exit code {res.returncode}"
        return False, f"bwrap cannot create a sandbox here ({err}); user namespaces may be off"
    return True, f"bubblewrap at {path}"


def lock_runtime(runtime: Path, sockets: Sequence[Path], uid: int) -> None:
    """Root agent, once the kernel (as ``uid``) has bound ``sockets`` in ``runtime``: the dir
    becomes the agent's again, so the kernel can no longer swap a name for a symlink to some
    socket of the host (which the agent, as root, would connect to by that name), and each
    name must be a socket the kernel's user made. KernelLaunchError otherwise."""
    os.chown(runtime, os.geteuid(), os.getegid())
    os.chmod(runtime, 0o755)
    for path in sockets:
        st = os.lstat(path)
        if not S_ISSOCK(st.st_mode) or st.st_uid != uid:
            raise KernelLaunchError(
                f"the kernel replaced its socket {path.name} with something else, so the "
                "provider did not connect to it; start the kernel again without that code"
            )
