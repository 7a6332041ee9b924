"""Atomic JSON files in the project's own state directories.

A reader sees the old file or the new one, never a torn one: the bytes go to a temporary name
private to this write (``mkstemp``: a random name created exclusively, so two writers never share
it and a planted link is never followed) in the target's directory, then ``os.replace`` puts it
in place. ``durable=True`` also fsyncs the file and the directory, for state whose loss costs
money or a kernel (leases, payment state, wallets, offers). Directories a peer can write into
go through :mod:`jupyter_gpumarket.safefs` instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["read_cache", "write_json", "write_text"]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(
    path: Path, text: str, *, mode: int = 0o600, durable: bool = True, exclusive: bool = False
) -> None:
    """Replace ``path`` with ``text`` at once, file mode ``mode``. ``exclusive``: never replace
    an existing file (raises FileExistsError instead)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if mode != 0o600:  # mkstemp creates 0600
                os.fchmod(f.fileno(), mode)
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if the name exists, whoever made it meanwhile
        else:
            os.replace(tmp, path)
            tmp = ""
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if durable:
        _fsync_dir(path.parent)


def write_json(
    path: Path,
    data: Any,
    *,
    mode: int = 0o600,
    durable: bool = True,
    exclusive: bool = False,
    indent: int | None = None,
    compact: bool = False,
) -> None:
    """:func:`write_text` of ``data`` as JSON (``indent``: pretty, with a final newline;
    ``compact``: no spaces)."""
    if indent is not None:
        text = json.dumps(data, indent=indent) + "\n"
    else:
        text = json.dumps(data, separators=(",", ":") if compact else None)
    write_text(path, text, mode=mode, durable=durable, exclusive=exclusive)


def read_cache(path: Path | str, max_bytes: int, what: str, log: logging.Logger) -> Any:
    """The JSON a cache file holds, or None when it is missing, unreadable, not JSON or larger
    than ``max_bytes`` (logged as ``what``: a cache is rebuilt, never trusted half-read)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s %s unreadable (%s): starting afresh", what, path, exc)
        return None
    if len(raw) > max_bytes:
        log.warning("%s %s is larger than %d bytes: starting afresh", what, path, max_bytes)
        return None
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        log.warning("%s %s is not JSON (%s): starting afresh", what, path, exc)
        return None
