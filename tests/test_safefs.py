"""safefs: paths under a directory someone else changes, opened relative to directory fds."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_gpumarket import safefs
from jupyter_gpumarket.exceptions import ProtocolError, UnsafePath

from synchelpers import sha, write


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """(root fd, root, outside): root holds a file, a dir, and links to both and outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(root, "f.txt", b"inside")
    write(root, "d/g.txt", b"deeper")
    write(outside, "secret.txt", b"secret")
    (root / "inlink").symlink_to(root / "f.txt")
    (root / "indir").symlink_to(root / "d")
    (root / "outlink").symlink_to(outside / "secret.txt")
    (root / "outdir").symlink_to(outside)
    fd = safefs.open_root(root)
    try:
        yield fd, root, outside
    finally:
        os.close(fd)


def _read(fd: int, rel: str, **kw: bool) -> bytes:
    return b"".join(safefs.read_fd(safefs.open_regular(fd, rel, **kw)))


def test_regular_files_are_read_through_plain_dirs(tree: tuple[int, Path, Path]) -> None:
    fd, _, _ = tree
    assert _read(fd, "f.txt") == b"inside"
    assert _read(fd, "d/g.txt", single_link=True) == b"deeper"


@pytest.mark.parametrize(
    "rel", ["inlink", "outlink", "indir/g.txt", "outdir/secret.txt", "f.txt/x", "../root/f.txt"]
)
def test_no_symlink_is_followed_at_any_component(tree: tuple[int, Path, Path], rel: str) -> None:
    fd, _, _ = tree
    with pytest.raises(UnsafePath):
        safefs.open_regular(fd, rel)
    with pytest.raises(UnsafePath):
        safefs.write_atomic(fd, rel + "/new" if "/" not in rel else rel, [b"x"])


def test_fifos_devices_and_dirs_are_refused_without_blocking(
    tree: tuple[int, Path, Path],
) -> None:
    fd, root, _ = tree
    os.mkfifo(root / "pipe")  # opening it for reading would block without O_NONBLOCK
    names = ["pipe", "d"]
    if os.geteuid() == 0:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        names.append("null")
    for name in names:
        with pytest.raises(UnsafePath, match="not a regular file"):
            safefs.open_regular(fd, name)


def test_hard_linked_files_are_refused_when_asked(tree: tuple[int, Path, Path]) -> None:
    fd, root, outside = tree
    os.link(outside / "secret.txt", root / "hard.txt")
    assert _read(fd, "hard.txt") == b"secret"  # the caller's own dir: allowed
    with pytest.raises(UnsafePath, match="hard links"):
        safefs.open_regular(fd, "hard.txt", single_link=True)


def test_write_atomic_makes_parents_sets_mtime_and_replaces(tree: tuple[int, Path, Path]) -> None:
    fd, root, _ = tree
    old_inode = (root / "f.txt").stat().st_ino
    assert safefs.write_atomic(fd, "f.txt", [b"new ", b"bytes"], sha256=sha(b"new bytes")) == 9
    assert (root / "f.txt").read_bytes() == b"new bytes"
    assert (root / "f.txt").stat().st_ino != old_inode  # a new file, renamed over the old
    safefs.write_atomic(fd, "a/b/c.txt", [b"x"], mtime_ns=7)
    assert (root / "a/b/c.txt").stat().st_mtime_ns == 7
    assert safefs.lstat_at(fd, "a/b/c.txt") is not None
    assert safefs.lstat_at(fd, "a/b/missing") is None


@pytest.mark.parametrize(
    ("chunks", "kw", "match"),
    [
        ([b"evil"], {"sha256": sha(b"good")}, "not the announced"),
        ([b"12345", b"6"], {"limit": 5}, "more than the 5 bytes"),
    ],
)
def test_write_atomic_leaves_nothing_behind_on_refusal(
    tree: tuple[int, Path, Path], chunks: list[bytes], kw: dict[str, object], match: str
) -> None:
    fd, root, _ = tree
    with pytest.raises(ProtocolError, match=match):
        safefs.write_atomic(fd, "d/g.txt", chunks, **kw)  # type: ignore[arg-type]
    assert sorted(p.name for p in (root / "d").iterdir()) == ["g.txt"]
    assert (root / "d/g.txt").read_bytes() == b"deeper"


def test_write_never_replaces_or_follows_a_symlink_leaf(tree: tuple[int, Path, Path]) -> None:
    fd, root, outside = tree
    for rel in ("outlink", "inlink"):
        with pytest.raises(UnsafePath, match="symlink"):
            safefs.write_atomic(fd, rel, [b"x"])
        assert (root / rel).is_symlink()
    with pytest.raises(UnsafePath):
        safefs.link_atomic(outside / "secret.txt", fd, "outdir/planted")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"secret"


def test_link_atomic_links_the_callers_file(tree: tuple[int, Path, Path]) -> None:
    fd, root, outside = tree
    safefs.link_atomic(outside / "secret.txt", fd, "new/linked", mtime_ns=5)
    assert (root / "new/linked").stat().st_ino == (outside / "secret.txt").stat().st_ino
    assert (root / "new/linked").stat().st_mtime_ns == 5


def test_read_fd_stops_past_its_limit(tree: tuple[int, Path, Path]) -> None:
    fd, _, _ = tree
    with pytest.raises(ProtocolError, match="grew past"):
        b"".join(safefs.read_fd(safefs.open_regular(fd, "f.txt"), 2, limit=3))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_chown_tree_never_follows_links(tree: tuple[int, Path, Path]) -> None:
    _, root, outside = tree
    before = (outside / "secret.txt").stat()
    safefs.chown_tree(root, 4242, 4243)
    for rel in ("", "f.txt", "d", "d/g.txt", "outlink", "outdir"):
        st = os.lstat(root / rel)
        assert (st.st_uid, st.st_gid) == (4242, 4243), rel
    after = (outside / "secret.txt").stat()
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert os.stat(outside).st_uid == before.st_uid


def test_tree_usage_counts_inodes_and_symlinks_own_size_and_stops_at_its_bounds(
    tmp_path: Path,
) -> None:
    for i in range(50):
        (tmp_path / f"e{i}").touch()  # empty files: no bytes, still inodes
    (tmp_path / "link").symlink_to("/")  # counted, never followed
    usage = safefs.tree_usage(tmp_path, max_entries=1000)
    assert (usage.inodes, usage.complete, usage.too_deep) == (52, True, False)
    assert usage.bytes < 1 << 20
    capped = safefs.tree_usage(tmp_path, max_entries=10)
    assert (capped.inodes, capped.complete) == (11, False)
    deep = tmp_path / "d"
    for _ in range(5):
        deep = deep / "d"
    deep.mkdir(parents=True)
    shallow = safefs.tree_usage(tmp_path, max_entries=1000, max_depth=3)
    assert (shallow.complete, shallow.too_deep) == (False, True)
