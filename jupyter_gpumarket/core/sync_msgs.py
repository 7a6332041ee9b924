"""The file-sync messages of the AGENT channel: the renter offers its notebook dir's manifest
(in pages), the agent names the blobs it lacks, blobs travel in chunks, the renter commits; and
the way back, a pull of the kernel's working dir. Parsed by core.control's ``parse_*``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = [
    "MANIFEST_PAGE_BYTES",
    "BlobChunk",
    "FetchBlob",
    "PullManifest",
    "PullRequest",
    "SyncCommit",
    "SyncDone",
    "SyncNeed",
    "SyncOffer",
    "sync_offer_pages",
]

MANIFEST_PAGE_BYTES = 64 * 1024
_HEX = frozenset("0123456789abcdef")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ProtocolError(msg)


def _sha(value: object, what: str) -> None:
    _check(
        isinstance(value, str) and len(value) == 64 and all(c in _HEX for c in value),
        f"{what} must be a sha256 hex digest",
    )


@dataclass(frozen=True)
class SyncOffer:
    """Renter -> agent: the notebook dir's manifest (wire form of core.filesync.Manifest),
    or one page of it: ``more`` says pages follow (see :func:`sync_offer_pages`); the agent
    answers the last page only."""

    manifest: dict[str, Any]
    more: bool = False
    op: str = field(default="sync_offer", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(isinstance(self.manifest, dict), "sync_offer.manifest must be an object")
        _check(isinstance(self.more, bool), "sync_offer.more must be a boolean")


def sync_offer_pages(
    manifest: dict[str, Any], page_bytes: int = MANIFEST_PAGE_BYTES
) -> list[SyncOffer]:
    """A manifest's wire form (``{"files": {path: entry}}``) as sync_offer pages of about
    ``page_bytes`` each (one entry more than that makes a page of its own); one page when it
    fits, which is the message agents from before pages take."""
    files = manifest.get("files")
    _check(isinstance(files, dict), "manifest must have a 'files' object")
    assert isinstance(files, dict)
    pages: list[dict[str, Any]] = [{}]
    size = 0
    for path, entry in files.items():
        cost = len(path.encode()) + len(json.dumps(entry, separators=(",", ":"))) + 8
        if size + cost > page_bytes and pages[-1]:
            pages.append({})
            size = 0
        pages[-1][path] = entry
        size += cost
    last = len(pages) - 1
    return [SyncOffer(manifest={"files": page}, more=i < last) for i, page in enumerate(pages)]


@dataclass(frozen=True)
class SyncNeed:
    """Agent -> renter: the blobs of the offered manifest it does not have yet."""

    missing: tuple[str, ...]
    op: str = field(default="sync_need", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "missing", tuple(self.missing))
        for sha in self.missing:
            _sha(sha, "sync_need.missing[]")


@dataclass(frozen=True)
class BlobChunk:
    """Either way: one chunk of a blob; the bytes are the message's second part."""

    sha256: str
    last: bool = False
    op: str = field(default="blob_chunk", init=False, repr=False)

    def __post_init__(self) -> None:
        _sha(self.sha256, "blob_chunk.sha256")
        _check(isinstance(self.last, bool), "blob_chunk.last")


@dataclass(frozen=True)
class SyncCommit:
    """Renter -> agent: every missing blob is sent; lay the manifest out in the working dir."""

    op: str = field(default="sync_commit", init=False, repr=False)


@dataclass(frozen=True)
class SyncDone:
    """Agent -> renter: the working dir holds the offered files."""

    files: int
    bytes: int
    op: str = field(default="sync_done", init=False, repr=False)


@dataclass(frozen=True)
class PullRequest:
    """Renter -> agent: what is in the kernel's working dir now?"""

    op: str = field(default="pull_request", init=False, repr=False)


@dataclass(frozen=True)
class PullManifest:
    """Agent -> renter: manifest of the working dir (answer to PullRequest)."""

    manifest: dict[str, Any]
    op: str = field(default="pull_manifest", init=False, repr=False)


@dataclass(frozen=True)
class FetchBlob:
    """Renter -> agent: send the bytes of this blob of the last pull manifest."""

    sha256: str
    op: str = field(default="fetch_blob", init=False, repr=False)

    def __post_init__(self) -> None:
        _sha(self.sha256, "fetch_blob.sha256")
