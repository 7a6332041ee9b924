"""The pages of one sync_offer, gathered until the last (core.control.sync_offer_pages).

Each page was parsed on the agent's loop within core.control.MAX_REQUEST_BYTES; here, on a
file-op worker thread, they are joined into one file list. What one offer may hold is bounded
as it arrives (entries, the bytes of their names), so a renter that sends pages forever is
refused at the bound, never buffered: the same bounds a one-message manifest had.
"""

from __future__ import annotations

from typing import Any

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import IGNORE_FILE, MAX_ENTRIES, format_bytes
from jupyter_gpumarket.exceptions import ProtocolError, SyncTooLarge

__all__ = ["OfferPages"]

_ENTRY_OVERHEAD = 128  # a wire entry's size, sha256 and mtime, with its punctuation


class OfferPages:
    """Gathers sync_offer pages; :meth:`take` returns the whole file list at the last page."""

    def __init__(self) -> None:
        self._files: dict[str, Any] = {}
        self._bytes = 0

    def take(self, msg: control.SyncOffer) -> dict[str, Any] | None:
        """Add ``msg``'s page: None while more pages follow, else every page's files (and
        the next offer starts afresh). Refuses an offer above the bounds, dropping its pages."""
        page = msg.manifest.get("files")
        if not isinstance(page, dict):
            self.reset()
            raise ProtocolError("manifest must be a JSON object with a 'files' object")
        try:
            self._add(page)
        except (ProtocolError, SyncTooLarge):
            self.reset()
            raise
        if msg.more:
            return None
        files = self._files
        self.reset()
        return files

    def reset(self) -> None:
        self._files = {}
        self._bytes = 0

    def _add(self, page: dict[str, Any]) -> None:
        if len(self._files) + len(page) > MAX_ENTRIES:
            raise SyncTooLarge(
                f"the file list has {len(self._files) + len(page):,} files, more than the "
                f"{MAX_ENTRIES:,} one sync takes: exclude what the kernel does not need in "
                f"{IGNORE_FILE} (gitignore syntax)"
            )
        for path in page:
            if path in self._files:
                raise ProtocolError(f"manifest names {path[:120]!r} on two pages")
            self._bytes += len(path) + _ENTRY_OVERHEAD
        if self._bytes > control.MAX_CONTROL_BYTES:
            raise SyncTooLarge(
                f"the file list's pages pass {format_bytes(control.MAX_CONTROL_BYTES)}: too "
                f"many or too long names; exclude what the kernel does not need in {IGNORE_FILE}"
            )
        self._files.update(page)
