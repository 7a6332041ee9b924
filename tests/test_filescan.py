"""The I/O half of file sync: safe paths on disk, hashing scans, verified reads and writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket import filescan
from jupyter_gpumarket.exceptions import (
    ConfigError,
    ProtocolError,
    SyncTooLarge,
    UnsafePath,
)
from jupyter_gpumarket.filescan import read_chunks, resolve_inside, scan, write_verified

from synchelpers import TRICKY_PATHS, sha, stays_inside, write


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    (root / "a").mkdir(parents=True)
    (base / "out").mkdir()
    (root / "outlink").symlink_to(base / "out")
    (root / "inlink").symlink_to(root / "a")
    return root


@given(st.one_of(st.text(), TRICKY_PATHS))
def test_resolve_inside_eitherstays_inside_or_refuses(hostile_root: Path, text: str) -> None:
    try:
        path = resolve_inside(hostile_root, text)
    except UnsafePath:
        return
    assert stays_inside(hostile_root, path)


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
    real_hash = filescan._hash_at
    monkeypatch.setattr(
        filescan, "_hash_at", lambda fd, p, u: hashed.append(str(p)) or real_hash(fd, p, u)
    )
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
