"""Agent side of notebook file sync: receive blobs, lay out the working dir, serve pulls.

Blobs go to a content-addressed store kept per renter identity (never shared between renters,
so nobody can probe what another renter uploaded), so a second launch of the same notebook
sends no file bytes. Manifests and paths from the renter are validated by core.filesync.

What a renter can make the agent store is bounded: only blobs the agent asked for, never more
bytes than the offer declared, an offer whose files (counted once per path) pass the kernel's
disk quota is refused, and all renters' stores together are pruned to :func:`store_bound`
(least recently used first) after each commit and at the end of each lease. The working dir is
the kernel's: every access to it goes through :mod:`jupyter_gpumarket.safefs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from jupyter_gpumarket.agent.filestore import BlobStore, collect
from jupyter_gpumarket.agent.offer_pages import OfferPages
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import DEFAULT_CAP_BYTES, Manifest, format_bytes
from jupyter_gpumarket.exceptions import ProtocolError, SyncTooLarge
from jupyter_gpumarket.filescan import read_chunks

__all__ = ["FILE_OPS", "LeaseFiles", "store_bound", "store_for"]

CHUNK = 1024 * 1024
STORE_QUOTAS = 4  # blob stores keep up to this many kernel disk quotas between leases
DEFAULT_STORE_BYTES = 4 * DEFAULT_CAP_BYTES  # ... or this much without a disk quota


def store_for(state_dir: Path, identity: str) -> BlobStore:
    """The blob store of one renter identity (dev token or wallet address)."""
    key = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return BlobStore(state_dir / "blobs" / key, pool=state_dir / "blobs")


def store_bound(quota_bytes: int | None) -> int:
    """Bytes the agent keeps in its blob stores (all renters together) between leases."""
    return STORE_QUOTAS * quota_bytes if quota_bytes is not None else DEFAULT_STORE_BYTES


_live: weakref.WeakSet[LeaseFiles] = weakref.WeakSet()  # this process's leases' file states
_live_lock = threading.Lock()  # ops run on worker threads

Reply = tuple[Any, bytes | None]  # an AGENT message and its optional data part

FILE_OPS = (
    control.SyncOffer,
    control.BlobChunk,
    control.SyncCommit,
    control.PullRequest,
    control.FetchBlob,
)


def _in_use() -> frozenset[str]:
    """Blobs some live lease has offered: pruning keeps them (an upload awaiting its commit)."""
    with _live_lock:
        offered = [files._offered for files in _live]
    return frozenset().union(*(m.hashes() for m in offered if m is not None))


class LeaseFiles:
    """File sync state of one lease. Blocking (disk) work: run :meth:`handle` in a thread.

    ``quota_bytes`` (the kernel's disk quota, None = none) bounds what one sync may lay out in
    the working dir, counting a blob once per path it is laid out at; uploads are bounded by
    the sizes the offer declared, and only blobs the agent asked for are taken.
    """

    def __init__(
        self, store: BlobStore, lease_dir: Path, workdir: Path, quota_bytes: int | None = None
    ) -> None:
        self._store = store
        self._incoming = lease_dir / "incoming"
        self._workdir = workdir
        self._quota = quota_bytes
        self._offered: Manifest | None = None
        self._wanted: dict[str, int] = {}  # blob -> declared size, asked for and not yet stored
        self._received: dict[str, int] = {}
        self._pullable: dict[str, tuple[str, int]] = {}  # blob -> (path, size) of the last pull
        self._pages = OfferPages()
        with _live_lock:
            _live.add(self)

    def handle(self, msg: Any, extra: Sequence[bytes]) -> list[Reply]:
        """Do one file-sync op; returns the replies. ProtocolError/ConfigError on bad input."""
        if isinstance(msg, control.SyncOffer):
            files = self._pages.take(msg)
            if files is None:
                return []  # more pages follow; the last one is answered
            return [(self._offer(Manifest.from_json({"files": files})), None)]
        if isinstance(msg, control.BlobChunk):
            self._chunk(msg, extra)
            return []
        if isinstance(msg, control.SyncCommit):
            if self._offered is None:
                raise ProtocolError("sync_commit without a sync_offer")
            m = self._offered
            try:
                self._store.materialize(m, self._workdir)
            finally:
                self._store.prune(store_bound(self._quota), keep=_in_use())
            return [(control.SyncDone(files=len(m), bytes=m.total_bytes), None)]
        if isinstance(msg, control.PullRequest):
            manifest = collect(self._workdir)
            self._pullable = {e.sha256: (p, e.size) for p, e in manifest.files.items()}
            return [(control.PullManifest(manifest=manifest.to_json()), None)]
        if isinstance(msg, control.FetchBlob):
            return self._serve(msg.sha256)
        raise ProtocolError(f"{msg.op} is not a file-sync op")

    def close(self) -> None:
        """The lease ended: drop partial uploads, keep the store within its bound."""
        with _live_lock:
            _live.discard(self)
        shutil.rmtree(self._incoming, ignore_errors=True)
        self._store.prune(store_bound(self._quota), keep=_in_use())

    def _offer(self, manifest: Manifest) -> control.SyncNeed:
        if self._quota is not None and manifest.total_bytes > self._quota:
            raise SyncTooLarge(
                f"the offered files take {format_bytes(manifest.total_bytes)} laid out in the "
                f"working dir (a file counts at every path it is at), over this provider's "
                f"disk quota of {format_bytes(self._quota)}; sync fewer files "
                "(.gpumarketignore) or pick an offer with more disk"
            )
        self._offered = manifest
        sizes = {e.sha256: e.size for e in manifest.files.values()}
        missing = sorted(self._store.missing(sizes))
        self._wanted = {sha: sizes[sha] for sha in missing}
        self._received = {}
        shutil.rmtree(self._incoming, ignore_errors=True)  # parts of an earlier offer
        return control.SyncNeed(missing=tuple(missing))

    def _chunk(self, msg: control.BlobChunk, extra: Sequence[bytes]) -> None:
        if len(extra) != 1:
            raise ProtocolError("blob_chunk needs exactly one data part")
        if self._offered is None or msg.sha256 not in self._offered.hashes():
            raise ProtocolError(f"blob {msg.sha256[:12]}… is not in the offered manifest")
        size = self._wanted.get(msg.sha256)
        if size is None:
            raise ProtocolError(
                f"blob {msg.sha256[:12]}… was not asked for (sync_need) or is already stored; "
                "send only the blobs of the last sync_need"
            )
        part = self._incoming / msg.sha256
        got = self._received.get(msg.sha256, 0) + len(extra[0])
        if got > size:
            self._drop(msg.sha256)
            raise ProtocolError(
                f"blob {msg.sha256[:12]}…: {got} bytes sent for a file the offer declared as "
                f"{size} bytes; the upload was dropped, offer the directory again"
            )
        self._incoming.mkdir(exist_ok=True)
        with part.open("ab") as f:
            f.write(extra[0])
        self._received[msg.sha256] = got
        if msg.last:
            try:
                if got != size:
                    raise ProtocolError(
                        f"blob {msg.sha256[:12]}…: {got} bytes sent for a file the offer "
                        f"declared as {size} bytes; offer the directory again"
                    )
                self._store.put(msg.sha256, read_chunks(self._incoming, msg.sha256))
                del self._wanted[msg.sha256]
            finally:
                self._drop(msg.sha256)

    def _drop(self, sha256: str) -> None:
        self._received.pop(sha256, None)
        with contextlib.suppress(FileNotFoundError):
            (self._incoming / sha256).unlink()

    def _serve(self, sha256: str) -> list[Reply]:
        listed = self._pullable.get(sha256)
        if listed is None:
            raise ProtocolError(f"blob {sha256[:12]}… is not in the last pull manifest")
        relpath, size = listed
        chunks = read_chunks(self._workdir, relpath, CHUNK, untrusted=True)
        data = list(_limited(chunks, size, relpath)) or [b""]
        n = len(data)
        return [(control.BlobChunk(sha256=sha256, last=i == n - 1), c) for i, c in enumerate(data)]


def _limited(chunks: Iterable[bytes], size: int, relpath: str) -> Iterator[bytes]:
    """``chunks``, refused once they pass ``size`` (a file that grew since it was listed)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > size:
            raise ProtocolError(
                f"{relpath} grew since the pull manifest was made; ask for the manifest again"
            )
        yield chunk
