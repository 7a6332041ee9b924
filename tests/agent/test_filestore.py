"""The agent's blob store and working dir, on tmp_path, plus one full launch/pull round trip."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from jupyter_gpumarket.agent.filestore import BlobStore, collect
from jupyter_gpumarket.core.filesync import FileEntry, Manifest, plan_pull, plan_upload
from jupyter_gpumarket.exceptions import AgentError, ProtocolError, UnsafePath
from jupyter_gpumarket.filescan import read_chunks, scan, write_verified


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "state")


def test_put_verifies_and_stores_by_hash(store: BlobStore) -> None:
    data = b"weights" * 1000
    assert not store.has(sha(data))
    assert store.put(sha(data), [data[:5], data[5:]]) == len(data)
    assert store.has(sha(data))
    assert b"".join(store.read(sha(data), chunk_size=64)) == data
    assert store.hashes() == {sha(data)}
    assert store.missing([sha(data), sha(b"other")]) == {sha(b"other")}


def test_put_of_a_known_blob_does_not_consume_the_chunks(store: BlobStore) -> None:
    store.put(sha(b"a"), [b"a"])

    def boom() -> list[bytes]:
        raise AssertionError("chunks were read again")

    assert store.put(sha(b"a"), iter(boom, None)) == 1  # type: ignore[call-overload]


def test_put_refuses_bytes_that_do_not_match(store: BlobStore) -> None:
    with pytest.raises(ProtocolError, match="not the announced"):
        store.put(sha(b"good"), [b"evil"])
    assert not store.has(sha(b"good"))
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("bad", ["", "../" * 3 + "etc/passwd", "A" * 64, "0" * 63])
def test_blob_names_must_be_hashes(store: BlobStore, bad: str) -> None:
    with pytest.raises(ProtocolError, match="64 lowercase hex"):
        store.has(bad)
    with pytest.raises(ProtocolError):
        store.put(bad, [b"x"])


def test_unwritable_state_dir_is_an_agent_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(AgentError, match="state dir"):
        BlobStore(tmp_path / "file")


def _manifest(**files: bytes) -> Manifest:
    return Manifest(
        {k.replace("__", "/"): FileEntry(len(v), sha(v), 10**18) for k, v in files.items()}
    )


@pytest.mark.parametrize("link", [False, True])
def test_materialize_lays_out_files(store: BlobStore, tmp_path: Path, link: bool) -> None:
    m = _manifest(nb=b"{}", data__x=b"x", data__y=b"x")
    store.put(sha(b"{}"), [b"{}"])
    store.put(sha(b"x"), [b"x"])
    work = tmp_path / "work"
    store.materialize(m, work, link=link)
    assert (work / "nb").read_bytes() == b"{}"
    assert (work / "data/y").read_bytes() == b"x"
    assert (work / "data/x").stat().st_mtime_ns == 10**18
    assert (work / "data/x").stat().st_nlink == (3 if link else 1)  # blob + 2 files when linked
    assert sorted(p.name for p in (work / "data").iterdir()) == ["x", "y"]  # no temp files left


def test_copied_files_can_be_rewritten_without_touching_the_store(
    store: BlobStore, tmp_path: Path
) -> None:
    store.put(sha(b"input"), [b"input"])
    store.materialize(_manifest(f=b"input"), tmp_path / "work")
    with open(tmp_path / "work/f", "r+b") as f:
        f.write(b"EVIL!")
    assert b"".join(store.read(sha(b"input"))) == b"input"


def test_materialize_replaces_existing_files_and_keeps_kernel_outputs(
    store: BlobStore, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "f").write_bytes(b"old")
    (work / "sub/output.csv").write_bytes(b"kernel made this")
    store.put(sha(b"new"), [b"new"])
    store.materialize(_manifest(f=b"new"), work)
    assert (work / "f").read_bytes() == b"new"
    assert (work / "sub/output.csv").read_bytes() == b"kernel made this"


def test_materialize_skips_files_already_laid_out(store: BlobStore, tmp_path: Path) -> None:
    store.put(sha(b"v1"), [b"v1"])
    work = tmp_path / "work"
    m = _manifest(f=b"v1")
    store.materialize(m, work)
    inode = (work / "f").stat().st_ino
    store.materialize(m, work)
    assert (work / "f").stat().st_ino == inode  # not rewritten
    (work / "f").write_bytes(b"kernel changed it")
    store.materialize(m, work)
    assert (work / "f").read_bytes() == b"v1"  # changed size/mtime: laid out again


def test_materialize_refuses_missing_blobs_before_writing(store: BlobStore, tmp_path: Path) -> None:
    store.put(sha(b"a"), [b"a"])
    with pytest.raises(ProtocolError, match=r"1 blob\(s\) .* never uploaded"):
        store.materialize(_manifest(a=b"a", b=b"b"), tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []


def test_materialize_never_writes_through_escaping_symlinks(
    store: BlobStore, tmp_path: Path
) -> None:
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "target").write_bytes(b"precious")
    (work / "dirlink").symlink_to(outside)  # left behind by a kernel, say
    (work / "filelink").symlink_to(outside / "target")
    store.put(sha(b"x"), [b"x"])
    for m in [_manifest(dirlink__planted=b"x"), _manifest(filelink=b"x")]:
        with pytest.raises(UnsafePath):
            store.materialize(m, work)
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert (outside / "target").read_bytes() == b"precious"


def test_materialize_maps_os_errors(store: BlobStore, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "f").mkdir(parents=True)  # a directory where the manifest wants a file
    (work / "f" / "keep").write_bytes(b"")
    store.put(sha(b"x"), [b"x"])
    with pytest.raises(AgentError, match="cannot write f into the kernel's working dir"):
        store.materialize(_manifest(f=b"x"), work)


def test_collect_skips_symlinks_a_kernel_points_outside(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "result.txt").write_bytes(b"42")
    (work / "shadow").symlink_to("/etc/passwd")
    m = collect(work)
    assert list(m.files) == ["result.txt"]
    assert "outside" in {s.path: s.reason for s in m.skipped}["shadow"]


def test_launch_sync_and_pull_back_round_trip(store: BlobStore, tmp_path: Path) -> None:
    """Renter scans, agent stores only missing blobs, kernel writes, renter pulls safely."""
    local, work = tmp_path / "notebook", tmp_path / "work"
    (local / "data").mkdir(parents=True)
    (local / "nb.ipynb").write_bytes(b"{}")
    (local / "data/in.csv").write_bytes(b"a,b\n1,2\n")
    (local / "notes.md").write_bytes(b"v1")
    (local / ".git").mkdir()
    (local / ".git/config").write_bytes(b"[core]")

    at_launch = scan(local)
    plan = plan_upload(at_launch, store.hashes())
    for blob in plan.blobs:
        store.put(blob.sha256, read_chunks(local, blob.path))
    store.materialize(at_launch, work)
    assert plan.total_bytes == at_launch.total_bytes == 12
    assert plan_upload(scan(local, previous=at_launch), store.hashes()).total_bytes == 0

    (work / "out").mkdir()
    (work / "out/model.txt").write_bytes(b"trained")  # kernel creates
    (work / "notes.md").write_bytes(b"remote v2")  # kernel edits ...
    (local / "notes.md").write_bytes(b"local v2")  # ... and so does the user
    (work / ".git").mkdir()
    (work / ".git/hooks").mkdir()
    (work / ".git/hooks/pre-commit").write_bytes(b"#!/bin/sh\n")  # never comes back

    remote = collect(work)
    pull = plan_pull(remote, scan(local), at_launch)
    for item in pull.items:
        write_verified(local, item.local_path, read_chunks(work, item.remote_path), item.sha256)
    assert (local / "out/model.txt").read_bytes() == b"trained"
    assert (local / "notes.md").read_bytes() == b"local v2"
    [conflict] = pull.conflicts
    assert (local / conflict.saved_as).read_bytes() == b"remote v2"
    assert not (local / ".git/hooks").exists()


def test_prune_removes_least_recently_used_blobs_of_every_store(tmp_path: Path) -> None:
    pool = tmp_path / "blobs"
    mine, theirs = BlobStore(pool / "a", pool=pool), BlobStore(pool / "b", pool=pool)
    blobs = [bytes([i]) * 100 for i in range(4)]
    for i, (store, data) in enumerate(zip([mine, theirs, mine, theirs], blobs, strict=True)):
        store.put(sha(data), [data])
        os.utime(store.path(sha(data)), ns=(i * 10**9, i * 10**9))  # put in this order
    mine.missing([sha(blobs[0])])  # asked for again: now the most recently used
    assert mine.total_bytes() == 400
    assert mine.prune(250, keep={sha(blobs[1])}) == 200
    assert mine.hashes() == {sha(blobs[0])}  # 0 was used again, 2 was the oldest not kept
    assert theirs.hashes() == {sha(blobs[1])}  # 1 kept, 3 next oldest
    assert mine.total_bytes() == 200
