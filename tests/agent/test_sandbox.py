"""The sandbox's pure parts: bwrap argv, limits plans, slots, publish and sandbox decisions."""

from __future__ import annotations

import os
import pwd
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_gpumarket.agent.egress import nft_ruleset, table_name
from jupyter_gpumarket.agent.isolation import Isolation, check_publishable, decide_sandbox
from jupyter_gpumarket.agent.limits import (
    KernelLimits,
    cgroup_files,
    cgroup_parent,
    cpu_set,
    dir_usage,
    rlimit_plan,
)
from jupyter_gpumarket.agent.sandbox import (
    SandboxMounts,
    SandboxPolicy,
    build_bwrap_argv,
    default_policy,
    gpu_device_nodes,
    python_paths,
    sandbox_available,
)
from jupyter_gpumarket.agent.slots import KernelSlot, SlotPool, find_slot_users, setup_commands
from jupyter_gpumarket.exceptions import ConfigError

CMD = ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "/tmp/gpm-x/kernel.json"]
MOUNTS = SandboxMounts(workdir="/srv/state/leases/abc/work", runtime="/tmp/gpm-x")


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _index(argv: list[str], *items: str) -> int:
    n = len(items)
    return next(i for i in range(len(argv)) if argv[i : i + n] == list(items))


# -- argv --------------------------------------------------------------------------------------
def test_argv_read_only_system_private_tmp_and_own_dirs() -> None:
    policy = SandboxPolicy(hidden=("/srv/state", "/root"), tmp_bytes=1 << 20)
    argv = build_bwrap_argv(policy, MOUNTS, CMD)
    assert argv[:4] == ["bwrap", "--ro-bind", "/", "/"]
    assert _pairs(argv, "--tmpfs") == ["/root", "/tmp", "/srv/state"]
    assert argv[_index(argv, "--tmpfs", "/tmp") - 4 :][:4] == [
        "--size",
        str(1 << 20),
        "--perms",
        "1777",
    ]
    # own dirs bound read-write at the host paths, after the tmpfs that hides their parents
    assert _index(argv, "--bind", MOUNTS.runtime, MOUNTS.runtime) > _index(argv, "--tmpfs", "/tmp")
    work = _index(argv, "--bind", MOUNTS.workdir, MOUNTS.workdir)
    assert work > _index(argv, "--tmpfs", "/srv/state")
    # the parents bwrap makes inside the hidden state dir are traversable, created before the bind
    assert _pairs(argv, "--dir") == ["/srv/state/leases", "/srv/state/leases/abc"]
    assert _index(argv, "--dir", "/srv/state/leases/abc") < work
    for flag in ("--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert _pairs(argv, "--chdir") == [MOUNTS.workdir]
    assert "--unshare-net" not in argv  # egress full by default
    assert argv[-len(CMD) :] == CMD


def test_egress_none_unshares_the_network() -> None:
    argv = build_bwrap_argv(SandboxPolicy(egress="none"), MOUNTS, CMD)
    assert "--unshare-net" in argv
    assert argv.index("--unshare-net") < argv.index("--")


def test_root_agent_drops_to_the_slot_uid_without_capabilities() -> None:
    mounts = SandboxMounts(workdir="/w/work", runtime="/tmp/gpm-x", uid=1234, gid=2345)
    argv = build_bwrap_argv(SandboxPolicy(), mounts, CMD)
    sep = argv.index("--")
    assert "--unshare-user" not in argv  # privileged bwrap; setpriv changes the uid
    assert _pairs(argv[:sep], "--cap-add") == ["CAP_SETUID", "CAP_SETGID"]
    tail = argv[sep + 1 :]
    assert tail[0] == "setpriv"
    for opt in ("--reuid=1234", "--regid=2345", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all"):  # fmt: skip
        assert opt in tail[: tail.index("--")]
    assert tail[tail.index("--") + 1 :] == CMD


def test_unprivileged_agent_uses_a_user_namespace_without_nesting() -> None:
    argv = build_bwrap_argv(SandboxPolicy(), MOUNTS, CMD)
    sep = argv.index("--")
    assert "--unshare-user" in argv[:sep]
    assert "--disable-userns" in argv[:sep]
    assert "setpriv" not in argv
    assert "--cap-add" not in argv


def test_only_the_allotted_gpu_nodes_are_bound(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    nodes = gpu_device_nodes((1,), dev=tmp_path)
    assert nodes == tuple(str(tmp_path / n) for n in ("nvidia1", "nvidiactl", "nvidia-uvm"))
    assert gpu_device_nodes((), dev=tmp_path) == ()
    mounts = SandboxMounts(
        workdir="/w", runtime="/tmp/r", devices=("/dev/nvidia1", "/dev/nvidiactl")
    )
    argv = build_bwrap_argv(SandboxPolicy(), mounts, CMD)
    assert _pairs(argv, "--dev-bind") == ["/dev/nvidia1", "/dev/nvidiactl"]
    assert _index(argv, "--dev", "/dev") < _index(argv, "--dev-bind", "/dev/nvidia1")


def test_exposed_python_comes_back_and_hidden_paths_inside_it_stay_hidden() -> None:
    policy = SandboxPolicy(hidden=("/root", "/root/py/secrets"), expose=("/root/py", "/usr"))
    argv = build_bwrap_argv(policy, MOUNTS, CMD)
    assert _pairs(argv, "--ro-bind") == ["/", "/root/py"]  # /usr was never hidden
    assert _index(argv, "--ro-bind", "/root/py", "/root/py") > _index(argv, "--tmpfs", "/root")
    assert _pairs(argv, "--tmpfs")[-1] == "/root/py/secrets"
    assert _index(argv, "--tmpfs", "/root/py/secrets") > _index(argv, "--ro-bind", "/root/py")


def test_python_paths_cover_a_venv_and_its_interpreter(tmp_path: Path) -> None:
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    paths = python_paths(str(venv / "python"))
    assert str(tmp_path / "venv") in paths
    assert str(Path(sys.executable).resolve().parent.parent) in paths


def test_secret_files_are_masked_unless_already_hidden(tmp_path: Path) -> None:
    policy = SandboxPolicy(hidden=("/root",), masked=("/etc/gpm/wallet.json", "/root/w.json"))
    argv = build_bwrap_argv(policy, MOUNTS, CMD)
    assert _index(argv, "--ro-bind", "/dev/null", "/etc/gpm/wallet.json") < argv.index("--")
    assert "/root/w.json" not in argv  # /root is an empty tmpfs already
    wallet = tmp_path / "wallet.json"
    wallet.write_text("{}")
    made = default_policy(tmp_path / "state", masked=(str(wallet), str(tmp_path / "none")))
    assert made.masked == (str(wallet.resolve()),)  # a missing file cannot be a mount point


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"egress": "some"}, "egress"),
        ({"hidden": ("relative",)}, "hidden"),
        ({"hidden": ("/",)}, "hide /"),
        ({"expose": ("/x\0y",)}, "expose"),
        ({"tmp_bytes": 0}, "tmp_bytes"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SandboxPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workdir": "w"}, "workdir"),
        ({"devices": ("/etc/passwd",)}, "under /dev"),
        ({"uid": 0, "gid": 0}, "uid"),
        ({"uid": 5}, "together"),
    ],
)
def test_mounts_reject_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SandboxMounts(**{"workdir": "/w", "runtime": "/tmp/r", **kwargs})


def test_default_policy_hides_state_and_home_and_exposes_python(tmp_path: Path) -> None:
    policy = default_policy(tmp_path / "state", egress="none", extra_hidden=(str(tmp_path),))
    assert str(tmp_path) in policy.hidden
    assert str(Path.home().resolve()) in policy.hidden
    assert "/var/run" not in policy.hidden  # a symlink on Debian: bwrap cannot mount over it
    assert policy.egress == "none"
    assert policy.expose


@pytest.mark.skipif(
    not sandbox_available()[0], reason=f"no working bwrap: {sandbox_available()[1]}"
)
def test_argv_runs_and_hides_what_it_says(tmp_path: Path) -> None:
    secret = tmp_path / "state" / "tls-key.pem"
    secret.parent.mkdir()
    secret.write_text("private")
    work, runtime = tmp_path / "state" / "work", tmp_path / "run"
    work.mkdir()
    runtime.mkdir()
    policy = SandboxPolicy(hidden=(str(tmp_path / "state"),), egress="none")
    uid = None if os.geteuid() else 65534
    mounts = SandboxMounts(str(work), str(runtime), uid=uid, gid=uid)
    os.chmod(work, 0o777)
    script = f"cat {secret} || echo hidden; touch {work}/ok; tail -n +3 /proc/net/dev | cut -d: -f1"
    res = subprocess.run(
        build_bwrap_argv(policy, mounts, ["sh", "-c", script]), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "private" not in res.stdout
    assert "hidden" in res.stdout
    assert (work / "ok").exists()
    assert res.stdout.split("hidden", 1)[1].split() == ["lo"]  # egress none: loopback only


# -- limits ------------------------------------------------------------------------------------
def test_rlimit_plan_falls_back_without_cgroup() -> None:
    lim = KernelLimits(memory_bytes=1 << 30, pids=256, disk_bytes=50 << 20)
    plan = dict(rlimit_plan(lim))
    assert plan == {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_FSIZE: 50 << 20,
        resource.RLIMIT_AS: 1 << 30,
        resource.RLIMIT_NPROC: 256,
    }
    # what the kernel's cgroup enforces is left to it; the file-size cap stays
    assert dict(rlimit_plan(lim, cgroup={"memory", "pids"})) == {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_FSIZE: 50 << 20,
    }
    partial = dict(rlimit_plan(lim, cgroup={"memory"}))  # a group with only memory delegated
    assert resource.RLIMIT_AS not in partial
    assert partial[resource.RLIMIT_NPROC] == 256


def test_cgroup_files_and_cpu_fallback() -> None:
    lim = KernelLimits(memory_bytes=1 << 30, pids=100, cpus=1.5)
    assert cgroup_files(lim) == {
        "memory.max": str(1 << 30),
        "memory.swap.max": "0",
        "pids.max": "100",
        "cpu.max": "150000 100000",
    }
    assert cgroup_files(KernelLimits()) == {}
    assert cgroup_files(lim, {"memory"}) == {"memory.max": str(1 << 30), "memory.swap.max": "0"}
    assert cpu_set(0, 2, [0, 1, 2, 3]) == {0, 1}
    assert cpu_set(1, 1.5, [0, 1, 2, 3]) == {2, 3}
    assert cpu_set(3, 8, [0, 1]) == {0, 1}
    assert cpu_set(0, None, [0, 1]) is None


def test_cgroup_parent_none_without_a_writable_unified_tree(tmp_path: Path) -> None:
    assert cgroup_parent(KernelLimits(pids=64), root=tmp_path) is None  # no cgroup.controllers
    assert cgroup_parent(KernelLimits(), root=Path("/sys/fs/cgroup")) is None  # nothing to limit


def test_cgroup_parent_delegates_a_group_that_holds_processes(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids")
    svc = tmp_path / "svc"
    svc.mkdir()
    (svc / "cgroup.controllers").write_text("cpu io memory pids")
    (svc / "cgroup.subtree_control").write_text("")
    (svc / "cgroup.procs").write_text("123\n")
    lim = KernelLimits(memory_bytes=1 << 30, pids=100)
    both = (svc, frozenset({"memory", "pids"}))
    assert cgroup_parent(lim, root=tmp_path, own="0::/svc\n") == both
    assert (svc / "agent" / "cgroup.procs").read_text() == "123"  # the agent moved to a leaf
    assert (svc / "cgroup.subtree_control").read_text() == "+memory +pids"
    (svc / "cgroup.subtree_control").write_text("memory pids")  # as cgroupfs reads it back
    assert cgroup_parent(lim, root=tmp_path, own="0::/svc/agent\n") == both  # no nesting
    assert cgroup_parent(KernelLimits(cpus=1), root=tmp_path, own="0::/svc/agent\n") is None
    (svc / "cgroup.subtree_control").write_text("")
    (svc / "cgroup.controllers").write_text("memory")  # only memory given to us (seen on GPUs)
    only_memory = (svc, frozenset({"memory"}))
    assert cgroup_parent(lim, root=tmp_path, own="0::/svc\n") == only_memory
    (svc / "cgroup.controllers").write_text("cpu")
    assert cgroup_parent(lim, root=tmp_path, own="0::/svc\n") is None


@pytest.mark.parametrize(
    "kwargs",
    [{"memory_bytes": 1}, {"pids": 2}, {"disk_bytes": True}, {"cpus": 0}, {"cpus": "2"}],
)
def test_limits_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        KernelLimits(**kwargs)


def test_dir_usage_counts_nested_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(os.urandom(300_000))
    (tmp_path / "g").write_bytes(os.urandom(100_000))
    usage = dir_usage(tmp_path)
    assert 400_000 <= usage.bytes < 500_000
    assert (usage.inodes, usage.complete) == (5, True)  # the root, a, b, f, g


# -- slots -------------------------------------------------------------------------------------
def _pw(name: str, uid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, uid + 1, "", "/nonexistent", "/usr/sbin/nologin"))


def test_slot_users_are_found_in_index_order_and_created_when_missing() -> None:
    entries = [_pw("gpm-slot-1", 901), _pw("root", 0), _pw("gpm-slot-0", 900), _pw("gpm-slot-x", 5)]
    slots = find_slot_users(entries)
    assert slots == (KernelSlot(0, 900, 901), KernelSlot(1, 901, 902))
    cmds = setup_commands(3, slots)
    assert [c[-1] for c in cmds] == ["gpm-slot-2"]
    assert "--system" in cmds[0]
    assert "/usr/sbin/nologin" in cmds[0]
    with pytest.raises(ConfigError, match="--slots"):
        setup_commands(0, ())


def test_slot_pool_reuses_the_lowest_free_slot() -> None:
    pool = SlotPool([KernelSlot(1, 11, 11), KernelSlot(0, 10, 10)])
    a, b = pool.acquire(), pool.acquire()
    assert (a.index, b.index) == (0, 1)
    assert pool.acquire() is None
    pool.release(a)
    assert pool.acquire() == a  # the next lease on slot 0 gets the same (wiped) uid
    assert SlotPool.indices(2).acquire() == KernelSlot(0)
    with pytest.raises(ConfigError, match="root"):
        KernelSlot(0, 0, 0)


def test_slots_are_locked_machine_wide(tmp_path: Path) -> None:
    slots = [KernelSlot(0, 10, 10), KernelSlot(1, 11, 11)]
    first, second = SlotPool(slots, tmp_path / "locks"), SlotPool(slots, tmp_path / "locks")
    a = first.acquire()
    assert a == slots[0]
    assert second.acquire() == slots[1]  # slot 0 is another agent's right now
    assert second.acquire() is None
    first.release(a)
    second_again = SlotPool(slots, tmp_path / "locks")
    assert second_again.acquire() == slots[0]


# -- decisions ---------------------------------------------------------------------------------
def test_publishing_without_sandbox_needs_the_unsafe_flag() -> None:
    assert check_publishable(True, False) == "sandboxed"
    assert check_publishable(False, True) == "unsandboxed"
    with pytest.raises(ConfigError, match="--unsafe-no-sandbox"):
        check_publishable(False, False)


def test_decide_sandbox() -> None:
    ok = {"probe_ok": True, "probe_reason": "", "is_root": True, "slots": 4, "max_kernels": 4}
    assert decide_sandbox("auto", **ok)[0] is True
    assert decide_sandbox("off", **ok) == (False, "sandbox turned off (--sandbox off)")
    no_bwrap = {**ok, "probe_ok": False, "probe_reason": "bubblewrap is not installed"}
    on, why = decide_sandbox("auto", **no_bwrap)
    assert not on
    assert "not installed" in why
    with pytest.raises(ConfigError, match="not installed"):
        decide_sandbox("on", **no_bwrap)
    with pytest.raises(ConfigError, match="provider setup --slots 8"):
        decide_sandbox("on", **{**ok, "max_kernels": 8})
    assert decide_sandbox("auto", **{**ok, "is_root": False, "slots": 0})[0] is True
    with pytest.raises(ConfigError, match="--sandbox"):
        decide_sandbox("maybe", **ok)


def test_isolation_info_labels_unsandboxed_offers() -> None:
    info = Isolation(None, KernelLimits(pids=64), (), "no sandbox: x").info()
    assert info["isolation"] == "unsandboxed"
    assert info["limits"]["pids"] == 64
    assert Isolation(SandboxPolicy(egress="none"), KernelLimits()).info()["egress"] == "none"


def test_port_guard_rules_reject_only_slot_users_to_the_agent_port() -> None:
    script = nft_ruleset([995, 993, 995], 41925)
    assert f"table inet {table_name(41925)} {{" in script
    assert "meta skuid { 993, 995 } tcp dport 41925 fib daddr type local reject" in script
    assert "policy accept" in script  # everything else passes
    with pytest.raises(ConfigError, match="slot uids"):
        nft_ruleset([0], 41925)
    with pytest.raises(ConfigError, match="TCP port"):
        nft_ruleset([993], 0)


@pytest.mark.parametrize(
    ("egress", "sandboxed", "can_guard", "unsafe", "refused"),
    [
        ("full", True, False, False, True),  # kernels could reach the agent's port
        ("full", True, True, False, False),  # nftables guard
        ("none", True, False, False, False),  # own network namespace
        ("full", False, False, False, False),  # unsandboxed: check_publishable decides
        ("full", True, False, True, False),  # explicitly unsafe
    ],
)
def test_published_agents_keep_kernels_off_their_port(
    egress: str, sandboxed: bool, can_guard: bool, unsafe: bool, refused: bool
) -> None:
    from jupyter_gpumarket.agent.isolation import check_port_guard
    from jupyter_gpumarket.exceptions import ConfigError

    kw = {"egress": egress, "sandboxed": sandboxed, "can_guard": can_guard, "unsafe": unsafe}
    if refused:
        with pytest.raises(ConfigError, match="--egress none"):
            check_port_guard(**kw)
    else:
        check_port_guard(**kw)
