"""The I/O half of notebook file sync: walking, hashing, reading and writing files safely.

The decisions live in :mod:`jupyter_gpumarket.core.filesync` (pure); this module touches the
disk, for both the renter (scan the notebook dir, write pulled files) and the agent (scan the
working dir, serve and store blobs). Every path is checked by ``safe_relpath`` and then opened
relative to the root's directory fd without following links (:mod:`jupyter_gpumarket.safefs`),
so what a check saw is what gets used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pathspec

from jupyter_gpumarket import safefs
from jupyter_gpumarket.core.filesync import (
    DEFAULT_CAP_BYTES,
    HASH_CHUNK_BYTES,
    IGNORE_FILE,
    RACY_NS,
    VENV_MARKER,
    FileEntry,
    Manifest,
    Skipped,
    check_cap,
    ignore_spec,
    is_sha256_hex,
    safe_relpath,
)
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError, UnsafePath

_MAX_DEPTH = 256  # directory levels a scan descends (each holds one open fd)
_IGNORE_FILE_MAX = 1 << 20

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


def _target_inside(root_real: str, rel: str) -> str:
    """``rel`` with symlinks inside root resolved (the renter syncs an inner link by content),
    as a path relative to root; :class:`UnsafePath` when it resolves outside."""
    target = os.path.realpath(os.path.join(root_real, rel))
    if not _inside(root_real, target):
        raise UnsafePath(
            f"refused file path {rel!r}: it resolves through a symlink to {target}, "
            f"outside {root_real}; remove the symlink or sync the target itself"
        )
    return os.path.relpath(target, root_real)


def read_chunks(
    root: str | os.PathLike[str],
    relpath: str,
    chunk_size: int = HASH_CHUNK_BYTES,
    *,
    untrusted: bool = False,
) -> Iterator[bytes]:
    """Stream a regular file inside root (for sending a blob or serving a pull).

    The file is opened relative to root's fd without following any symlink
    (:mod:`jupyter_gpumarket.safefs`), so a name swapped meanwhile fails instead of leading
    elsewhere; FIFOs and devices are refused without blocking. With ``untrusted`` (the agent
    reading a kernel's working dir) a symlink is never resolved and a hard-linked file refused;
    otherwise a symlink inside root is read as its target (the renter's own notebook dir).
    """
    rel = safe_relpath(relpath)
    root_real = os.path.realpath(root)
    if not untrusted:
        rel = _target_inside(root_real, rel)
    root_fd = safefs.open_root(root_real)
    try:
        fd = safefs.open_regular(root_fd, rel, single_link=untrusted)
    finally:
        os.close(root_fd)
    yield from safefs.read_fd(fd, chunk_size)


def write_atomic_verified(dest: Path, chunks: Iterable[bytes], sha256: str) -> int:
    """Write ``chunks`` to ``dest`` through a temp file, only if they hash to ``sha256``.

    ``dest``'s directory is the caller's own (the agent's blob store)."""
    if not is_sha256_hex(sha256):
        raise ProtocolError(f"blob hash {sha256!r} is not 64 lowercase hex digits")
    root_fd = safefs.open_root(dest.parent)
    try:
        return safefs.write_atomic(root_fd, dest.name, chunks, sha256=sha256)
    finally:
        os.close(root_fd)


def write_verified(
    root: str | os.PathLike[str],
    relpath: str,
    chunks: Iterable[bytes],
    sha256: str,
    *,
    mtime_ns: int | None = None,
) -> Path:
    """Write a pulled file inside root, atomically and hash-checked, relative to root's fd:
    no symlink at any component is followed (a link there refuses the write)."""
    if not is_sha256_hex(sha256):
        raise ProtocolError(f"blob hash {sha256!r} is not 64 lowercase hex digits")
    rel = safe_relpath(relpath)
    root_real = os.path.realpath(root)
    root_fd = safefs.open_root(root_real)
    try:
        safefs.write_atomic(root_fd, rel, chunks, sha256=sha256, mtime_ns=mtime_ns)
    finally:
        os.close(root_fd)
    return Path(root_real, rel)


def _hash_at(root_fd: int, rel: str, untrusted: bool) -> tuple[str, int]:
    """(sha256 hex, size) of the bytes actually read from ``root_fd/rel`` (see safefs)."""
    fd = safefs.open_regular(root_fd, rel, single_link=untrusted)
    with os.fdopen(fd, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), f.tell()


def _read_ignore_file(root_fd: int, root_real: str, untrusted: bool) -> list[str]:
    try:
        rel = IGNORE_FILE if untrusted else _target_inside(root_real, IGNORE_FILE)
        fd = safefs.open_regular(root_fd, rel, single_link=untrusted)
    except (FileNotFoundError, UnsafePath):
        return []
    try:
        data = os.read(fd, _IGNORE_FILE_MAX)  # a longer file: its first MiB of patterns
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace").splitlines()


def scan(
    root: str | os.PathLike[str],
    ignore: Iterable[str] = (),
    cap_bytes: int = DEFAULT_CAP_BYTES,
    *,
    previous: Manifest | None = None,
    cap_hint: str = "the sync cap",
    untrusted: bool = False,
) -> Manifest:
    """Walk ``root`` and hash what would be synced.

    Applies :data:`DEFAULT_IGNORES`, virtualenvs (any dir holding ``pyvenv.cfg``), ``ignore``
    lines and ``root/.gpumarketignore``. Symlinks are never followed into directories; a
    symlinked file is synced by content only if it resolves inside root, otherwise it is
    skipped with a reason. The cap is checked on sizes before any hashing. With ``previous``,
    files whose size and mtime_ns are unchanged reuse the previous hash (as git's index does),
    except files modified in the last :data:`RACY_NS`: a rewrite within one timestamp tick
    keeps the mtime, so only older files can be trusted (git's "racily clean" rule).

    The walk and the hashing go through directory fds (:mod:`jupyter_gpumarket.safefs`): a
    name swapped for a symlink, FIFO or device during the scan is skipped, never followed.
    ``untrusted`` (the agent listing a kernel's working dir): no symlink is followed at all and
    hard-linked files are skipped.
    """
    if not isinstance(cap_bytes, int) or cap_bytes <= 0:
        raise ConfigError(f"file sync cap must be a positive number of bytes, got {cap_bytes!r}")
    root_real = os.path.realpath(root)
    if not os.path.isdir(root_real):
        raise ConfigError(f"cannot sync {root}: it is not a directory")
    root_fd = safefs.open_root(root_real)
    try:
        lines = [*ignore, *_read_ignore_file(root_fd, root_real, untrusted)]
        walk = _Walk(root_fd, root_real, ignore_spec(lines), untrusted)
        walk.visit(root_fd, "", 0)
        found, skipped = sorted(walk.found, key=lambda item: item[0]), walk.skipped
        check_cap(
            ((rel, st.st_size) for rel, _, st in found),
            cap_bytes,
            where=f"the notebook directory {root}",
            cap_hint=cap_hint,
        )
        files: dict[str, FileEntry] = {}
        settled_before = time.time_ns() - RACY_NS
        for rel, target, st in found:
            old = previous.files.get(rel) if previous is not None else None
            trusted = old is not None and st.st_mtime_ns < settled_before
            if trusted and (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns):
                files[rel] = old
                continue
            try:
                sha, size = _hash_at(root_fd, target, untrusted)
            except (OSError, UnsafePath) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                skipped.append(Skipped(rel, f"cannot read: {reason}"))
                continue
            files[rel] = FileEntry(size, sha, st.st_mtime_ns)
    finally:
        os.close(root_fd)
    return Manifest(files, tuple(skipped))


class _Walk:
    """One scan's walk: directories opened relative to their parent's fd, never via a link."""

    def __init__(
        self, root_fd: int, root_real: str, spec: pathspec.GitIgnoreSpec, untrusted: bool
    ) -> None:
        self.root_real = root_real
        self.spec = spec
        self.untrusted = untrusted
        self.found: list[tuple[str, str, os.stat_result]] = []  # (path, path to read, stat)
        self.skipped: list[Skipped] = []

    def visit(self, dir_fd: int, rel_dir: str, depth: int) -> None:
        try:
            with os.scandir(dir_fd) as it:
                names = sorted(entry.name for entry in it)
        except OSError as exc:
            self.skipped.append(Skipped(rel_dir or ".", f"cannot list: {exc.strerror or exc}"))
            return
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                self.skipped.append(Skipped(ascii(rel), "name is not valid UTF-8"))
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            if stat.S_ISDIR(st.st_mode):
                if not self.spec.match_file(rel + "/"):
                    self._enter(dir_fd, name, rel, depth + 1)
            elif self.spec.match_file(rel):
                continue
            elif stat.S_ISLNK(st.st_mode):
                self._link(rel)
            elif not stat.S_ISREG(st.st_mode):
                self.skipped.append(Skipped(rel, "not a regular file (fifo, socket or device)"))
            elif self.untrusted and st.st_nlink > 1:
                self.skipped.append(Skipped(rel, "hard-linked file (the provider sends no links)"))
            else:
                self.found.append((rel, rel, st))

    def _enter(self, dir_fd: int, name: str, rel: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            self.skipped.append(Skipped(rel, f"nested deeper than {_MAX_DEPTH} directories"))
            return
        try:
            sub = safefs.open_dir(dir_fd, [name], rel=rel)
        except (OSError, UnsafePath):
            self.skipped.append(Skipped(rel, "changed while it was listed"))
            return
        try:
            with contextlib.suppress(OSError):
                marker = os.stat(VENV_MARKER, dir_fd=sub, follow_symlinks=False)
                if stat.S_ISREG(marker.st_mode):
                    self.skipped.append(Skipped(rel, "virtualenv (holds pyvenv.cfg)"))
                    return
            self.visit(sub, rel, depth)
        finally:
            os.close(sub)

    def _link(self, rel: str) -> None:
        try:
            target = os.path.realpath(os.path.join(self.root_real, rel))
        except OSError:  # the link was swapped while being resolved
            self.skipped.append(Skipped(rel, "changed while it was listed"))
            return
        if not _inside(self.root_real, target):
            self.skipped.append(Skipped(rel, f"symlink points outside the directory ({target})"))
        elif self.untrusted:
            self.skipped.append(Skipped(rel, "symlink (the provider follows no links)"))
        elif not os.path.exists(target):
            self.skipped.append(Skipped(rel, "dangling symlink"))
        elif not os.path.isfile(target):
            self.skipped.append(Skipped(rel, "symlink to a directory is not followed"))
        else:
            with contextlib.suppress(OSError):  # gone meanwhile: not listed
                st = os.stat(target)
                self.found.append((rel, os.path.relpath(target, self.root_real), st))
