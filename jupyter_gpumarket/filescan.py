"""The I/O half of notebook file sync: walking, hashing, reading and writing files safely.

The decisions live in :mod:`jupyter_gpumarket.core.filesync` (pure); this module touches the
disk, for both the renter (scan the notebook dir, write pulled files) and the agent (scan the
working dir, serve and store blobs). Every path goes through :func:`resolve_inside`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pathspec

from jupyter_gpumarket.core.filesync import (
    _CHUNK,
    _RACY_NS,
    _VENV_MARKER,
    DEFAULT_CAP_BYTES,
    IGNORE_FILE,
    FileEntry,
    Manifest,
    Skipped,
    check_cap,
    ignore_spec,
    is_sha256_hex,
    safe_relpath,
)
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError, UnsafePath

__all__ = [
    "hash_file",
    "read_chunks",
    "resolve_inside",
    "scan",
    "write_atomic_verified",
    "write_verified",
]


def _inside(root_real: str, target: str) -> bool:
    return target != root_real and os.path.commonpath([root_real, target]) == root_real


def resolve_inside(root: str | os.PathLike[str], relpath: str) -> Path:
    """``root/relpath`` after :func:`safe_relpath`, refused if a symlink takes it outside root.

    Returns the unresolved path under the real root, so writing there replaces a symlink inside
    root instead of writing through it.
    """
    rel = safe_relpath(relpath)
    root_real = os.path.realpath(root)
    candidate = os.path.join(root_real, rel)
    target = os.path.realpath(candidate)
    if not _inside(root_real, target):
        raise UnsafePath(
            f"refused file path {rel!r}: it resolves through a symlink to {target}, "
            f"outside {root_real}; remove the symlink or sync the target itself"
        )
    return Path(candidate)


def hash_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(sha256 hex, size) of the bytes actually read."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), f.tell()


def read_chunks(
    root: str | os.PathLike[str], relpath: str, chunk_size: int = _CHUNK
) -> Iterator[bytes]:
    """Stream a file inside root (for sending a blob or serving a pull)."""
    with open(resolve_inside(root, relpath), "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def write_atomic_verified(dest: Path, chunks: Iterable[bytes], sha256: str) -> int:
    """Write ``chunks`` to ``dest`` through a temp file, only if they hash to ``sha256``."""
    if not is_sha256_hex(sha256):
        raise ProtocolError(f"blob hash {sha256!r} is not 64 lowercase hex digits")
    tmp = dest.with_name(f".{dest.name[:32]}.partial-{secrets.token_hex(4)}")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "xb") as f:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
        if digest.hexdigest() != sha256:
            raise ProtocolError(
                f"received bytes for {dest.name} hash to {digest.hexdigest()}, "
                f"not the announced {sha256}; the transfer was dropped, retry it"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def write_verified(
    root: str | os.PathLike[str],
    relpath: str,
    chunks: Iterable[bytes],
    sha256: str,
    *,
    mtime_ns: int | None = None,
) -> Path:
    """Write a pulled/materialized file inside root, atomically and hash-checked."""
    dest = resolve_inside(root, relpath)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic_verified(dest, chunks, sha256)
    if mtime_ns is not None:
        os.utime(dest, ns=(mtime_ns, mtime_ns))
    return dest


def scan(
    root: str | os.PathLike[str],
    ignore: Iterable[str] = (),
    cap_bytes: int = DEFAULT_CAP_BYTES,
    *,
    previous: Manifest | None = None,
    cap_hint: str = "the sync cap",
) -> Manifest:
    """Walk ``root`` and hash what would be synced.

    Applies :data:`DEFAULT_IGNORES`, virtualenvs (any dir holding ``pyvenv.cfg``), ``ignore``
    lines and ``root/.gpumarketignore``. Symlinks are never followed into directories; a
    symlinked file is synced by content only if it resolves inside root, otherwise it is
    skipped with a reason. The cap is checked on sizes before any hashing. With ``previous``,
    files whose size and mtime_ns are unchanged reuse the previous hash (as git's index does),
    except files modified in the last :data:`_RACY_NS`: a rewrite within one timestamp tick
    keeps the mtime, so only older files can be trusted (git's "racily clean" rule).
    """
    if not isinstance(cap_bytes, int) or cap_bytes <= 0:
        raise ConfigError(f"file sync cap must be a positive number of bytes, got {cap_bytes!r}")
    root_real = os.path.realpath(root)
    if not os.path.isdir(root_real):
        raise ConfigError(f"cannot sync {root}: it is not a directory")
    lines = list(ignore)
    ignore_file = os.path.join(root_real, IGNORE_FILE)
    if os.path.isfile(ignore_file):
        with open(ignore_file, encoding="utf-8", errors="replace") as f:
            lines += f.read().splitlines()
    found, skipped = _walk(root_real, ignore_spec(lines))
    check_cap(
        ((rel, st.st_size) for rel, _, st in found),
        cap_bytes,
        where=f"the notebook directory {root}",
        cap_hint=cap_hint,
    )
    files: dict[str, FileEntry] = {}
    settled_before = time.time_ns() - _RACY_NS
    for rel, abspath, st in found:
        old = previous.files.get(rel) if previous is not None else None
        trusted = old is not None and st.st_mtime_ns < settled_before
        if trusted and (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns):
            files[rel] = old
            continue
        try:
            sha, size = hash_file(abspath)
        except OSError as exc:
            skipped.append(Skipped(rel, f"cannot read: {exc.strerror or exc}"))
            continue
        files[rel] = FileEntry(size, sha, st.st_mtime_ns)
    return Manifest(files, tuple(skipped))


def _walk(
    root_real: str, spec: pathspec.GitIgnoreSpec
) -> tuple[list[tuple[str, str, os.stat_result]], list[Skipped]]:
    found: list[tuple[str, str, os.stat_result]] = []
    skipped: list[Skipped] = []
    stack = [("", root_real)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(Skipped(rel_dir or ".", f"cannot list: {exc.strerror or exc}"))
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                skipped.append(Skipped(ascii(rel), "name is not valid UTF-8"))
                continue
            if entry.is_dir(follow_symlinks=False):
                if spec.match_file(rel + "/"):
                    continue
                if os.path.isfile(os.path.join(entry.path, _VENV_MARKER)):
                    skipped.append(Skipped(rel, "virtualenv (holds pyvenv.cfg)"))
                    continue
                stack.append((rel, entry.path))
            elif spec.match_file(rel):
                continue
            elif entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not _inside(root_real, target):
                    skipped.append(Skipped(rel, f"symlink points outside the directory ({target})"))
                elif not os.path.exists(target):
                    skipped.append(Skipped(rel, "dangling symlink"))
                elif not os.path.isfile(target):
                    skipped.append(Skipped(rel, "symlink to a directory is not followed"))
                else:
                    found.append((rel, target, os.stat(target)))
            elif entry.is_file(follow_symlinks=False):
                found.append((rel, entry.path, entry.stat(follow_symlinks=False)))
            else:
                skipped.append(Skipped(rel, "not a regular file (fifo, socket or device)"))
    found.sort(key=lambda item: item[0])
    return found, skipped
