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

import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from jupyter_gpumarket.core.filesync import DEFAULT_CAP_BYTES, Manifest, is_sha256_hex
from jupyter_gpumarket.exceptions import AgentError, ProtocolError
from jupyter_gpumarket.filescan import resolve_inside, scan, write_atomic_verified

__all__ = ["BlobStore", "collect"]


class BlobStore:
    """Content-addressed blobs under ``state_dir/blobs``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir) / "blobs"
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
        """The hashes in ``hashes`` the store lacks (the answer to a renter's manifest)."""
        return {sha for sha in hashes if not self.has(sha)}

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

        Paths go through :func:`resolve_inside`, so a symlink the kernel left in the working
        dir cannot redirect a write outside it. Files not in the manifest are left alone.
        Every blob must be here first (:class:`ProtocolError` names the first one missing).
        A regular file already there with the entry's size and mtime_ns is left as it is.
        """
        Path(workdir).mkdir(parents=True, exist_ok=True)
        if absent := sorted(self.missing(manifest.hashes())):
            raise ProtocolError(
                f"{len(absent)} blob(s) of the manifest were never uploaded (first: {absent[0]}); "
                "upload the missing blobs before asking for the files"
            )
        for relpath, entry in manifest.files.items():
            dest = resolve_inside(workdir, relpath)
            try:
                if _unchanged(dest, entry.size, entry.mtime_ns):
                    continue  # a restart reuses the dir: leave files already laid out alone
                self._place(self.path(entry.sha256), dest, link=link)
                os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
            except OSError as exc:
                raise AgentError(
                    f"cannot write {relpath} into the kernel's working dir {workdir}: "
                    f"{exc.strerror or exc}; check the agent's disk space and permissions"
                ) from exc

    @staticmethod
    def _place(blob: Path, dest: Path, *, link: bool) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name[:32]}.materialize")
        tmp.unlink(missing_ok=True)
        if link:
            blob.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.link(blob, tmp)
        else:
            shutil.copyfile(blob, tmp)
        os.replace(tmp, dest)


def _unchanged(dest: Path, size: int, mtime_ns: int) -> bool:
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (size, mtime_ns)


def collect(
    workdir: str | os.PathLike[str],
    ignore: Iterable[str] = (),
    cap_bytes: int = DEFAULT_CAP_BYTES,
    *,
    previous: Manifest | None = None,
) -> Manifest:
    """Manifest of the kernel's working dir, for the renter's ``plan_pull``.

    Same rules as the renter's scan: default ignores, ``.gpumarketignore``, symlinks escaping
    the working dir skipped (a kernel cannot make the agent serve ``/etc/shadow``), capped.
    Serve the bytes with :func:`~jupyter_gpumarket.core.filesync.read_chunks`.
    """
    return scan(workdir, ignore, cap_bytes, previous=previous, cap_hint="the agent's pull cap")
