"""Agent side of notebook file sync: receive blobs, lay out the working dir, serve pulls.

Blobs go to a content-addressed store kept per renter identity (never shared between renters,
so nobody can probe what another renter uploaded), so a second launch of the same notebook
sends no file bytes. Manifests and paths from the renter are validated by core.filesync.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_gpumarket.agent.filestore import BlobStore, collect
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import Manifest
from jupyter_gpumarket.exceptions import ProtocolError
from jupyter_gpumarket.filescan import read_chunks

__all__ = ["FILE_OPS", "LeaseFiles", "store_for"]

CHUNK = 1024 * 1024


def store_for(state_dir: Path, identity: str) -> BlobStore:
    """The blob store of one renter identity (dev token or wallet address)."""
    key = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return BlobStore(state_dir / "blobs" / key)


Reply = tuple[Any, bytes | None]  # an AGENT message and its optional data part

FILE_OPS = (
    control.SyncOffer,
    control.BlobChunk,
    control.SyncCommit,
    control.PullRequest,
    control.FetchBlob,
)


class LeaseFiles:
    """File sync state of one lease. Blocking (disk) work: run :meth:`handle` in a thread."""

    def __init__(self, store: BlobStore, lease_dir: Path, workdir: Path) -> None:
        self._store = store
        self._incoming = lease_dir / "incoming"
        self._workdir = workdir
        self._offered: Manifest | None = None
        self._pullable: dict[str, str] = {}

    def handle(self, msg: Any, extra: Sequence[bytes]) -> list[Reply]:
        """Do one file-sync op; returns the replies. ProtocolError/ConfigError on bad input."""
        if isinstance(msg, control.SyncOffer):
            self._offered = Manifest.from_json(msg.manifest)
            missing = sorted(self._store.missing(self._offered.hashes()))
            return [(control.SyncNeed(missing=tuple(missing)), None)]
        if isinstance(msg, control.BlobChunk):
            self._chunk(msg, extra)
            return []
        if isinstance(msg, control.SyncCommit):
            if self._offered is None:
                raise ProtocolError("sync_commit without a sync_offer")
            self._store.materialize(self._offered, self._workdir)
            m = self._offered
            return [(control.SyncDone(files=len(m), bytes=m.total_bytes), None)]
        if isinstance(msg, control.PullRequest):
            manifest = collect(self._workdir)
            self._pullable = {e.sha256: p for p, e in manifest.files.items()}
            return [(control.PullManifest(manifest=manifest.to_json()), None)]
        if isinstance(msg, control.FetchBlob):
            return self._serve(msg.sha256)
        raise ProtocolError(f"{msg.op} is not a file-sync op")

    def _chunk(self, msg: control.BlobChunk, extra: Sequence[bytes]) -> None:
        if len(extra) != 1:
            raise ProtocolError("blob_chunk needs exactly one data part")
        if self._offered is None or msg.sha256 not in self._offered.hashes():
            raise ProtocolError(f"blob {msg.sha256[:12]}… is not in the offered manifest")
        self._incoming.mkdir(exist_ok=True)
        part = self._incoming / msg.sha256
        with part.open("ab") as f:
            f.write(extra[0])
        if msg.last:
            try:
                self._store.put(msg.sha256, read_chunks(self._incoming, msg.sha256))
            finally:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()

    def _serve(self, sha256: str) -> list[Reply]:
        relpath = self._pullable.get(sha256)
        if relpath is None:
            raise ProtocolError(f"blob {sha256[:12]}… is not in the last pull manifest")
        chunks = list(read_chunks(self._workdir, relpath, CHUNK)) or [b""]
        n = len(chunks)
        return [
            (control.BlobChunk(sha256=sha256, last=i == n - 1), c) for i, c in enumerate(chunks)
        ]
