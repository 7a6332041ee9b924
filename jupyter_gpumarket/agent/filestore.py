"""The agent's content-addressed blob store and the kernel working dir it fills.

Blobs live under ``<state_dir>/blobs/<first two hex digits>/<sha256>``; a blob is only ever
written through a temp file whose bytes hashed to its name, so the store never holds a wrong
blob and a second launch of the same notebook finds everything already here.

Files are copied (not hard-linked) into the working dir by default: a kernel that rewrites an
input file in place (``open(path, "r+")``, or ``"w"`` on most filesystems) would otherwise
change the stored blob under its name. ``link=True`` hard-links for speed and makes the blob
read-only, so an in-place write fails instead of corrupting the store.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from jupyter_gpumarket import safefs
from jupyter_gpumarket.core.filesync import DEFAULT_CAP_BYTES, Manifest, is_sha256_hex
from jupyter_gpumarket.exceptions import AgentError, ProtocolError
from jupyter_gpumarket.filescan import scan, write_atomic_verified

__all__ = ["BlobStore", "collect"]


class BlobStore:
    """Content-addressed blobs under ``state_dir/blobs``; ``pool``: the directory holding every
    renter's store (``<pool>/<key>/blobs``), pruned together."""

    def __init__(self, state_dir: str | os.PathLike[str], *, pool: Path | None = None) -> None:
        self.root = Path(state_dir) / "blobs"
        self.pool = pool if pool is not None else Path(state_dir).parent
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AgentError(
                f"cannot create the blob store at {self.root}: {exc.strerror or exc}; "
                "point the agent's state dir at a writable directory"
            ) from exc

    def path(self, sha256: str) -> Path:
        if not is_sha256_hex(sha256):
            raise ProtocolError(f"blob hash {sha256!r} is not 64 lowercase hex digits")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def missing(self, hashes: Iterable[str]) -> set[str]:
        """The hashes in ``hashes`` the store lacks (the answer to a renter's manifest); those
        it has are marked used now (pruning removes the least recently used first)."""
        absent = set()
        for sha in hashes:
            try:
                os.utime(self.path(sha))
            except FileNotFoundError:
                absent.add(sha)
        return absent

    def hashes(self) -> frozenset[str]:
        return frozenset(p.name for p in self.root.glob("??/*") if is_sha256_hex(p.name))

    def put(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Store ``chunks`` as blob ``sha256``; raise :class:`ProtocolError` if they hash to
        anything else (nothing is kept then). Returns the size; a blob already here is a no-op
        (the chunks are not consumed)."""
        dest = self.path(sha256)
        if dest.is_file():
            return dest.stat().st_size
        dest.parent.mkdir(exist_ok=True)
        return write_atomic_verified(dest, chunks, sha256)

    def read(self, sha256: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with open(self.path(sha256), "rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def materialize(
        self, manifest: Manifest, workdir: str | os.PathLike[str], *, link: bool = False
    ) -> None:
        """Lay out every file of ``manifest`` in ``workdir`` (created if needed).

        The kernel may be running and changing ``workdir`` meanwhile, so every path is walked
        from the working dir's fd without following symlinks (:mod:`jupyter_gpumarket.safefs`):
        a directory swapped for a link refuses the commit (:class:`UnsafePath`) instead of
        sending the write elsewhere. Files not in the manifest are left alone. Every blob must
        be here first (:class:`ProtocolError` names the first one missing). A regular file
        already there with the entry's size and mtime_ns is left as it is.
        """
        Path(workdir).mkdir(parents=True, exist_ok=True)
        if absent := sorted(self.missing(manifest.hashes())):
            raise ProtocolError(
                f"{len(absent)} blob(s) of the manifest were never uploaded (first: {absent[0]}); "
                "upload the missing blobs before asking for the files"
            )
        root_fd = safefs.open_root(workdir)
        try:
            for relpath, entry in manifest.files.items():
                try:
                    st = safefs.lstat_at(root_fd, relpath)
                    if st is not None and _same(st, entry.size, entry.mtime_ns):
                        continue  # a restart reuses the dir: leave files already laid out alone
                    self._place(entry.sha256, entry.size, entry.mtime_ns, root_fd, relpath, link)
                except OSError as exc:
                    raise AgentError(
                        f"cannot write {relpath} into the kernel's working dir {workdir}: "
                        f"{exc.strerror or exc}; check the agent's disk space and permissions"
                    ) from exc
        finally:
            os.close(root_fd)

    def _place(
        self, sha256: str, size: int, mtime_ns: int, root_fd: int, relpath: str, link: bool
    ) -> None:
        blob = self.path(sha256)
        if link:
            blob.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            safefs.link_atomic(blob, root_fd, relpath, mtime_ns=mtime_ns)
            return
        src = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
        safefs.write_atomic(root_fd, relpath, safefs.read_fd(src), mtime_ns=mtime_ns, limit=size)

    def total_bytes(self) -> int:
        """Bytes held by every store under the same pool (all renters)."""
        return sum(st.st_size for _, st in _pool_blobs(self.pool))

    def prune(self, max_bytes: int, keep: Iterable[str] = ()) -> int:
        """Remove the least recently used blobs of the whole pool (every renter's store) until
        it holds at most ``max_bytes``; blobs in ``keep`` stay. Returns the bytes removed."""
        blobs = sorted(_pool_blobs(self.pool), key=lambda item: item[1].st_mtime_ns)
        total = sum(st.st_size for _, st in blobs)
        keep = set(keep)
        removed = 0
        for path, st in blobs:
            if total <= max_bytes:
                break
            if path.name in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                total -= st.st_size
                removed += st.st_size
        return removed


def _pool_blobs(pool: Path) -> list[tuple[Path, os.stat_result]]:
    found = []
    for path in pool.glob("*/blobs/??/*"):
        with contextlib.suppress(OSError):
            st = os.stat(path, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and is_sha256_hex(path.name):
                found.append((path, st))
    return found


def _same(st: os.stat_result, size: int, mtime_ns: int) -> bool:
    return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (size, mtime_ns)


def collect(
    workdir: str | os.PathLike[str],
    ignore: Iterable[str] = (),
    cap_bytes: int = DEFAULT_CAP_BYTES,
    *,
    previous: Manifest | None = None,
) -> Manifest:
    """Manifest of the kernel's working dir, for the renter's ``plan_pull``.

    Same rules as the renter's scan (default ignores, ``.gpumarketignore``, capped), but the
    kernel's dir is untrusted: no symlink is followed and hard-linked files are skipped (a
    kernel cannot make the agent serve ``/etc/shadow``). Serve the bytes with
    :func:`~jupyter_gpumarket.filescan.read_chunks` and ``untrusted=True``.
    """
    return scan(
        workdir,
        ignore,
        cap_bytes,
        previous=previous,
        cap_hint="the agent's pull cap",
        untrusted=True,
    )
