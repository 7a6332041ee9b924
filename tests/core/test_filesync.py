"""Pure file-sync decisions, and the scanner on tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core.filesync import (
    FileEntry,
    Manifest,
    check_cap,
    conflict_name,
    format_bytes,
    plan_pull,
    plan_upload,
    safe_relpath,
)
from jupyter_gpumarket.exceptions import (
    ConfigError,
    GpuMarketError,
    ProtocolError,
    SyncTooLarge,
    UnsafePath,
)

from synchelpers import TRICKY_PATHS, entry, manifest, sha, stays_inside

# --- safe_relpath --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_path", "expected"),
    [
        ("a.txt", "a.txt"),
        ("./a//b.txt", "a/b.txt"),
        ("a/./b/", "a/b"),
        ("..a/b..", "..a/b.."),
        ("données/é.csv", "données/é.csv"),
    ],
)
def test_safe_relpath_normalizes(given_path: str, expected: str) -> None:
    assert safe_relpath(given_path) == expected


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        (".", "working dir itself"),
        ("./", "working dir itself"),
        ("/etc/passwd", "absolute"),
        ("//server/share", "absolute"),
        ("C:/Windows", "absolute"),
        ("c:x", "absolute"),
        ("./C:/x", "absolute"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/..", "'..'"),
        ("a\\..\\..\\x", "backslash"),
        ("a\x00b", "NUL"),
        ("\udcff.txt", "UTF-8"),
        ("x" * 256, "255 bytes"),
        ("a/" * 2100 + "b", "4096 bytes"),
    ],
)
def test_safe_relpath_refuses(bad: str, why: str) -> None:
    with pytest.raises(UnsafePath, match=why) as info:
        safe_relpath(bad)
    assert "only relative paths inside the notebook directory" in str(info.value)


@pytest.mark.parametrize("bad", [None, b"a.txt", 3, Path("a")])
def test_safe_relpath_refuses_non_strings(bad: object) -> None:
    with pytest.raises(UnsafePath, match="must be a string"):
        safe_relpath(bad)  # type: ignore[arg-type]


def test_unsafe_path_is_a_protocol_error_and_a_value_error() -> None:
    assert issubclass(UnsafePath, ProtocolError)
    assert issubclass(UnsafePath, ValueError)


@given(st.one_of(st.text(), TRICKY_PATHS))
def test_safe_relpath_eitherstays_inside_or_refuses(text: str) -> None:
    root = Path("/nonexistent-sync-root")
    try:
        rel = safe_relpath(text)
    except UnsafePath:
        return
    assert rel == safe_relpath(rel)
    assert not rel.startswith("/")
    assert ".." not in rel.split("/")
    assert stays_inside(root, root / rel)


# --- Manifest -------------------------------------------------------------------------------------


def test_manifest_validates_paths_entries_and_clashes() -> None:
    with pytest.raises(UnsafePath, match="not normalized"):
        Manifest({"./a": entry(b"a")})
    with pytest.raises(UnsafePath):
        Manifest({"../a": entry(b"a")})
    with pytest.raises(ProtocolError, match="both as a file and as a directory"):
        Manifest({"a": entry(b"a"), "a/b": entry(b"b")})
    with pytest.raises(ProtocolError, match="must be a FileEntry"):
        Manifest({"a": (1, sha(b"a"), 1)})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("args", "field"),
    [((-1, "0" * 64, 0), "size"), ((True, "0" * 64, 0), "size"), ((1, "A" * 64, 0), "sha256"),
     ((1, "0" * 63, 0), "sha256"), ((1, "0" * 64, 1.5), "mtime_ns"),
     ((1, "0" * 64, 2**63), "mtime_ns")],
)  # fmt: skip
def test_file_entry_names_the_bad_field(args: tuple[object, ...], field: str) -> None:
    with pytest.raises(ProtocolError, match=f"FileEntry.{field}"):
        FileEntry(*args)  # type: ignore[arg-type]


def test_manifest_json_round_trip_and_rejects_garbage() -> None:
    m = manifest(a=b"a", d__b=b"bb")
    assert Manifest.from_json(m.to_json()) == m
    assert list(m.files) == ["a", "d/b"]
    assert m.total_bytes == 3
    for bad in [None, [], {"files": []}, {"files": {"a": [1, 2]}}, {"files": {"a": [1, "x", 0]}}]:
        with pytest.raises(ProtocolError):
            Manifest.from_json(bad)
    with pytest.raises(UnsafePath):
        Manifest.from_json({"files": {"../../.bashrc": [1, sha(b"a"), 0]}})
    with pytest.raises(UnsafePath, match="not normalized"):  # would shadow "a"
        Manifest.from_json({"files": {"a": [1, sha(b"a"), 0], "./a": [1, sha(b"b"), 0]}})


# --- plan_upload ----------------------------------------------------------------------------------


def test_plan_upload_sends_each_missing_blob_once() -> None:
    local = manifest(a=b"same", b=b"same", c=b"other", d=b"")
    plan = plan_upload(local, set())
    assert [blob.path for blob in plan.blobs] == ["a", "c", "d"]
    assert plan.total_bytes == 9
    assert plan.reused_bytes == 4
    assert plan.manifest is local


def test_plan_upload_skips_what_the_remote_has() -> None:
    local = manifest(a=b"same", c=b"other")
    plan = plan_upload(local, {sha(b"same")})
    assert [(b.path, b.sha256, b.size) for b in plan.blobs] == [("c", sha(b"other"), 5)]
    unchanged = plan_upload(local, local)
    assert unchanged.blobs == ()
    assert unchanged.total_bytes == 0
    assert unchanged.reused_bytes == local.total_bytes


def test_plan_upload_rejects_bad_remote_hashes() -> None:
    with pytest.raises(ProtocolError, match="remote blob hash"):
        plan_upload(manifest(a=b"a"), {"not-a-hash"})


# --- cap ------------------------------------------------------------------------------------------


def test_check_cap_names_biggest_files_and_the_way_out() -> None:
    check_cap([("a", 10), ("b", 10)], 20)
    sizes = [(f"small{i}", 1000) for i in range(10)] + [("data/huge.bin", 3_000_000)]
    with pytest.raises(SyncTooLarge) as info:
        check_cap(sizes, 2_000_000, cap_hint="c.GpuMarketProvisioner.sync_cap_bytes")
    message = str(info.value)
    assert message.index("data/huge.bin (3.0 MB)") < message.index("small0")
    assert ".gpumarketignore" in message
    assert "c.GpuMarketProvisioner.sync_cap_bytes" in message
    assert "nothing was synced" in message
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, GpuMarketError)


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (999, "999 B"), (1500, "1.5 kB"), (123_400_000, "123.4 MB")]
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


# --- plan_pull ------------------------------------------------------------------------------------


def test_conflict_name() -> None:
    h = "abcdef0123456789" * 4
    assert conflict_name("out/result.csv", h) == "out/result.remote-abcdef01.csv"
    assert conflict_name("x.tar.gz", h, 16) == "x.tar.remote-abcdef0123456789.gz"
    assert conflict_name(".env", h) == ".env.remote-abcdef01"
    assert conflict_name("Makefile", h) == "Makefile.remote-abcdef01"
    long_name = "é" * 120 + ".csv"  # 244 bytes: the stem is shortened to fit 255
    for length in (8, 64):
        renamed = conflict_name(f"d/{long_name}", h, length)
        assert safe_relpath(renamed) == renamed
        assert renamed.endswith(f".remote-{h[:length]}.csv")


def test_plan_pull_brings_back_new_and_remotely_changed_files() -> None:
    launch = manifest(nb=b"nb", data=b"v1")
    remote = manifest(nb=b"nb", data=b"v2", out__plot=b"png")
    plan = plan_pull(remote, local_now=launch, local_at_launch=launch)
    assert [(i.remote_path, i.local_path) for i in plan.items] == [
        ("data", "data"), ("out/plot", "out/plot")
    ]  # fmt: skip
    assert plan.conflicts == ()
    assert plan.total_bytes == 5


def test_plan_pull_never_overwrites_a_local_change() -> None:
    launch = manifest(notes__a_txt=b"v1")
    now = manifest(notes__a_txt=b"local edit")
    remote = manifest(notes__a_txt=b"remote edit")
    plan = plan_pull(remote, now, launch)
    saved = f"notes/a_txt.remote-{sha(b'remote edit')[:8]}"
    assert [(i.remote_path, i.local_path) for i in plan.items] == [("notes/a_txt", saved)]
    [conflict] = plan.conflicts
    assert (conflict.path, conflict.saved_as) == ("notes/a_txt", saved)
    assert "kept the local file" in conflict.message
    assert saved in conflict.message


@pytest.mark.parametrize(
    ("launch", "now", "remote", "expected"),
    [
        ({"f": b"1"}, {"f": b"local"}, {"f": b"1"}, []),  # only local changed: keep it
        ({"f": b"1"}, {"f": b"2"}, {"f": b"2"}, []),  # same change on both sides
        ({}, {"f": b"mine"}, {"f": b"theirs"}, ["CONFLICT"]),  # created on both sides
        ({"f": b"1"}, {}, {"f": b"2"}, ["f"]),  # deleted here, changed there: bring back
        ({"f": b"1"}, {"f": b"1"}, {}, []),  # deleted there: local file stays
    ],
)
def test_plan_pull_cases(
    launch: dict[str, bytes], now: dict[str, bytes], remote: dict[str, bytes], expected: list[str]
) -> None:
    plan = plan_pull(manifest(**remote), manifest(**now), manifest(**launch))
    got = [("CONFLICT" if plan.conflicts else i.local_path) for i in plan.items]
    assert got == expected


def test_plan_pull_does_not_repeat_a_saved_conflict_copy() -> None:
    launch, remote = manifest(f_txt=b"1"), manifest(f_txt=b"remote")
    first = plan_pull(remote, manifest(f_txt=b"local"), launch)
    saved = first.items[0].local_path
    now = Manifest({"f_txt": entry(b"local"), saved: entry(b"remote")})
    assert plan_pull(remote, now, launch).items == ()
    clash = Manifest({"f_txt": entry(b"local"), saved: entry(b"unrelated")})
    [item] = plan_pull(remote, clash, launch).items
    assert item.local_path == conflict_name("f_txt", sha(b"remote"), 16)


def test_plan_pull_never_writes_ignored_paths() -> None:
    remote = manifest(
        _git__hooks__pre_commit=b"#!/bin/sh\nrm -rf ~", venv__bin__activate=b"x", run_log=b"log"
    )
    remote = Manifest({k.replace("_git", ".git"): v for k, v in remote.files.items()})
    plan = plan_pull(remote, Manifest(), Manifest(), ignore=["*_log"])
    assert plan.items == ()
    assert sorted(s.path for s in plan.skipped) == [
        ".git/hooks/pre_commit", "run_log", "venv/bin/activate"
    ]  # fmt: skip


def test_plan_pull_skips_paths_blocked_by_local_files_or_dirs() -> None:
    now = manifest(a=b"file", d__x=b"x")
    remote = manifest(a__b=b"under a file", d=b"over a dir")
    plan = plan_pull(remote, now, now)
    assert plan.items == ()
    reasons = {s.path: s.reason for s in plan.skipped}
    assert "local file 'a' is in the way" in reasons["a/b"]
    assert "local directory" in reasons["d"]


_side = st.dictionaries(
    st.sampled_from(["a", "b.txt", "d/c.py", "d/e/f", ".git/hooks/x", "a.remote-x"]),
    st.sampled_from([b"1", b"2", b"3"]),
    max_size=6,
)


@given(_side, _side, _side)
def test_plan_pull_never_overwrites_local_changes(
    remote: dict[str, bytes], now: dict[str, bytes], launch: dict[str, bytes]
) -> None:
    plan = plan_pull(
        *(Manifest({p: entry(v) for p, v in side.items()}) for side in (remote, now, launch))
    )
    targets = [item.local_path for item in plan.items]
    assert len(targets) == len(set(targets))
    for item in plan.items:
        assert safe_relpath(item.local_path) == item.local_path
        assert not item.local_path.startswith(".git/")
        here = now.get(item.local_path)
        assert here is None or here == launch.get(item.local_path)  # only unchanged files
        assert remote[item.remote_path] != launch.get(item.remote_path)  # only remote changes
