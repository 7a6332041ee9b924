"""Pure file-sync decisions, and the scanner on tmp_path."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket import filescan
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
from jupyter_gpumarket.filescan import read_chunks, resolve_inside, scan, write_verified


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(data: bytes, mtime_ns: int = 1) -> FileEntry:
    return FileEntry(len(data), sha(data), mtime_ns)


def manifest(**files: bytes) -> Manifest:
    return Manifest({path.replace("__", "/"): entry(data) for path, data in files.items()})


def write(root: Path, rel: str, data: bytes = b"x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


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


_tricky = st.lists(
    st.sampled_from(["a", "..", ".", "", "out", "inlink", "outlink", "/", "\\", "\x00", "C:"]),
    max_size=6,
).map("/".join)


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    (root / "a").mkdir(parents=True)
    (base / "out").mkdir()
    (root / "outlink").symlink_to(base / "out")
    (root / "inlink").symlink_to(root / "a")
    return root


def _stays_inside(root: Path, path: str | os.PathLike[str]) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real != real_root and os.path.commonpath([real_root, real]) == real_root


@given(st.one_of(st.text(), _tricky))
def test_safe_relpath_either_stays_inside_or_refuses(text: str) -> None:
    root = Path("/nonexistent-sync-root")
    try:
        rel = safe_relpath(text)
    except UnsafePath:
        return
    assert rel == safe_relpath(rel)
    assert not rel.startswith("/")
    assert ".." not in rel.split("/")
    assert _stays_inside(root, root / rel)


@given(st.one_of(st.text(), _tricky))
def test_resolve_inside_either_stays_inside_or_refuses(hostile_root: Path, text: str) -> None:
    try:
        path = resolve_inside(hostile_root, text)
    except UnsafePath:
        return
    assert _stays_inside(hostile_root, path)


# --- resolve_inside, read_chunks, write_verified -----------------------------------------------


@pytest.fixture
def root_and_outside(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write(outside, "secret.txt", b"secret")
    return root, outside


def test_resolve_inside_refuses_escaping_symlinks(root_and_outside: tuple[Path, Path]) -> None:
    root, outside = root_and_outside
    (root / "filelink").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    for rel in ["filelink", "dirlink/secret.txt", "dirlink/new.txt", "../outside/secret.txt"]:
        with pytest.raises(UnsafePath):
            resolve_inside(root, rel)
    with pytest.raises(UnsafePath, match="absolute"):
        resolve_inside(root, str(outside / "secret.txt"))


def test_resolve_inside_allows_inner_symlink_and_returns_the_link(tmp_path: Path) -> None:
    write(tmp_path, "real/f.txt")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert resolve_inside(tmp_path, "alias/./f.txt") == tmp_path.resolve() / "alias/f.txt"
    (tmp_path / "self").symlink_to(tmp_path)
    with pytest.raises(UnsafePath):
        resolve_inside(tmp_path, "self")


def test_write_verified_writes_atomically_with_mtime(tmp_path: Path) -> None:
    data = b"hello\n" * 1000
    dest = write_verified(tmp_path, "new/dir/f.txt", [data[:10], data[10:]], sha(data), mtime_ns=7)
    assert dest.read_bytes() == data
    assert dest.stat().st_mtime_ns == 7
    assert b"".join(read_chunks(tmp_path, "new/dir/f.txt", chunk_size=100)) == data


def test_write_verified_refuses_wrong_bytes_and_leaves_nothing(tmp_path: Path) -> None:
    write(tmp_path, "f.txt", b"old")
    with pytest.raises(ProtocolError, match="not the announced"):
        write_verified(tmp_path, "f.txt", [b"evil"], sha(b"good"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    assert (tmp_path / "f.txt").read_bytes() == b"old"


def test_write_and_read_refuse_escaping_symlinks(root_and_outside: tuple[Path, Path]) -> None:
    root, outside = root_and_outside
    (root / "dirlink").symlink_to(outside)
    (root / "filelink").symlink_to(outside / "secret.txt")
    with pytest.raises(UnsafePath):
        write_verified(root, "dirlink/planted.txt", [b"x"], sha(b"x"))
    with pytest.raises(UnsafePath):
        write_verified(root, "filelink", [b"x"], sha(b"x"))
    with pytest.raises(UnsafePath):
        list(read_chunks(root, "filelink"))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"secret"


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


# --- scan -----------------------------------------------------------------------------------------


def test_scan_hashes_files_and_applies_default_ignores(tmp_path: Path) -> None:
    write(tmp_path, "nb.ipynb", b"{}")
    write(tmp_path, "pkg/mod.py", b"print(1)\n")
    for junk in [
        ".git/config",
        ".ipynb_checkpoints/nb-checkpoint.ipynb",
        "pkg/__pycache__/m.pyc",
        ".venv/bin/python",
        "venv/lib/x.py",
        "node_modules/x/index.js",
        ".gpumarket/state",
        "sub/.git/HEAD",
        "myenv/pyvenv.cfg",
        "myenv/lib/site.py",
    ]:
        write(tmp_path, junk)  # fmt: skip
    m = scan(tmp_path)
    assert list(m.files) == ["nb.ipynb", "pkg/mod.py"]
    mod = m.files["pkg/mod.py"]
    assert (mod.size, mod.sha256) == (9, sha(b"print(1)\n"))
    assert mod.mtime_ns == (tmp_path / "pkg/mod.py").stat().st_mtime_ns
    assert [(s.path, "pyvenv.cfg" in s.reason) for s in m.skipped] == [("myenv", True)]


def test_scan_honors_gpumarketignore_and_extra_lines(tmp_path: Path) -> None:
    for rel in ["a.bin", "keep.bin", "data/x.csv", "sub/data/y.csv", "notes.tmp", "ok.py"]:
        write(tmp_path, rel)
    write(tmp_path, "node_modules/wanted.js")
    write(tmp_path, ".gpumarketignore", b"# comment\n*.bin\n!keep.bin\ndata/\n!node_modules/\n")
    m = scan(tmp_path, ignore=["*.tmp"])
    assert list(m.files) == [
        ".gpumarketignore", "keep.bin", "node_modules/wanted.js", "ok.py"
    ]  # fmt: skip


def test_scan_refuses_escaping_symlinks_with_reasons(root_and_outside: tuple[Path, Path]) -> None:
    root, outside = root_and_outside
    write(root, "real/inner.txt", b"inner")
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside)
    (root / "alias.txt").symlink_to(root / "real/inner.txt")
    (root / "aliasdir").symlink_to(root / "real")
    (root / "dangling").symlink_to(root / "nowhere")
    os.mkfifo(root / "pipe")
    m = scan(root)
    assert list(m.files) == ["alias.txt", "real/inner.txt"]
    assert m.files["alias.txt"].sha256 == sha(b"inner")
    reasons = {s.path: s.reason for s in m.skipped}
    assert "outside" in reasons["leak.txt"]
    assert "outside" in reasons["leakdir"]
    assert "not followed" in reasons["aliasdir"]
    assert "dangling" in reasons["dangling"]
    assert "not a regular file" in reasons["pipe"]


def test_scan_skips_names_that_are_not_utf8(tmp_path: Path) -> None:
    write(tmp_path, "ok.txt")
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.txt"), "wb") as f:
        f.write(b"x")
    m = scan(tmp_path)
    assert list(m.files) == ["ok.txt"]
    assert [s.reason for s in m.skipped] == ["name is not valid UTF-8"]


def test_scan_over_cap_raises_and_ignore_file_fixes_it(tmp_path: Path) -> None:
    write(tmp_path, "small.py", b"x" * 10)
    write(tmp_path, "weights/model.ckpt", b"w" * 5000)
    with pytest.raises(SyncTooLarge, match=r"weights/model.ckpt \(5.0 kB\)"):
        scan(tmp_path, cap_bytes=1000)
    write(tmp_path, ".gpumarketignore", b"weights/\n")
    assert list(scan(tmp_path, cap_bytes=1000).files) == [".gpumarketignore", "small.py"]


@pytest.mark.parametrize("cap", [0, -1, 1.5, "500MB"])
def test_scan_rejects_a_bad_cap(tmp_path: Path, cap: object) -> None:
    with pytest.raises(ConfigError, match="cap"):
        scan(tmp_path, cap_bytes=cap)  # type: ignore[arg-type]


def test_scan_rejects_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        scan(tmp_path / "missing")


def test_scan_reuses_hashes_of_unchanged_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ["a.txt", "b.txt"]:
        os.utime(write(tmp_path, name, name.encode()), ns=(10**18, 10**18))  # long settled
    first = scan(tmp_path)
    hashed: list[str] = []
    real_hash = filescan.hash_file
    monkeypatch.setattr(filescan, "hash_file", lambda p: hashed.append(str(p)) or real_hash(p))
    assert scan(tmp_path, previous=first) == first
    assert hashed == []
    write(tmp_path, "b.txt", b"bigger")
    second = scan(tmp_path, previous=first)
    assert [Path(p).name for p in hashed] == ["b.txt"]
    assert second.files["b.txt"].sha256 == sha(b"bigger")


def test_scan_rehashes_recent_files_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", b"old")
    first = scan(tmp_path)
    mtime = path.stat().st_mtime_ns
    path.write_bytes(b"new")  # same size, and within one timestamp tick on coarse clocks
    os.utime(path, ns=(mtime, mtime))
    assert scan(tmp_path, previous=first).files["a.txt"].sha256 == sha(b"new")


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
