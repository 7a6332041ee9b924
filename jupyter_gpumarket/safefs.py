"""File I/O under a directory someone else can change while we work in it.

A kernel keeps running while the agent lays out synced files in its working dir and serves
pulls from it, so any path string checked first (``realpath``) and used later (``open``) can
point somewhere else by then: a directory swapped for a symlink, a file for a FIFO. Everything
here works relative to an opened directory fd, one component at a time, and refuses what is
not a plain directory or a regular file at the moment it is opened:

- directories are opened with ``O_DIRECTORY | O_NOFOLLOW``, so a symlink at any component is
  refused instead of followed (no check-then-use: the open *is* the check);
- a file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and kept only if ``fstat`` says it is a
  regular file, so a FIFO or device swapped in fails at once instead of blocking;
- a file is written to a fresh temp name (``O_CREAT | O_EXCL``) in its directory fd and renamed
  over the target, which replaces whatever entry is there (a symlink too) and never writes
  through one.

What this cannot stop: a process that can write the tree may rename a directory we hold open
elsewhere *inside the same mount* (bwrap bind mounts refuse renames out of them), so bytes may
land in another place of the same tree, never outside it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from jupyter_gpumarket.core.filesync import safe_relpath
from jupyter_gpumarket.exceptions import ProtocolError, UnsafePath

__all__ = [
    "chown_tree",
    "link_atomic",
    "lstat_at",
    "open_dir",
    "open_regular",
    "open_root",
    "read_fd",
    "tree_usage",
    "write_atomic",
]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_REFUSED = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK, errno.ENXIO}


def _refusal(rel: str, exc: OSError) -> UnsafePath:
    return UnsafePath(
        f"refused {rel!r}: a part of it is a symlink or not a directory "
        f"({exc.strerror or exc}); the directory changed under the transfer: "
        "remove the link and try again"
    )


def open_root(path: str | os.PathLike[str]) -> int:
    """An fd of the directory ``path`` itself (its last component must not be a symlink).

    ``path`` is the caller's own (the agent's state dir, the renter's notebook dir): the parts
    above it are trusted; what lies below is not."""
    return os.open(path, DIR_FLAGS)


def _parts(relpath: str) -> list[str]:
    return safe_relpath(relpath).split("/")


def open_dir(root_fd: int, parts: Iterable[str], *, create: bool = False, rel: str = "") -> int:
    """fd of ``root_fd/parts…``, never through a symlink; missing dirs made when ``create``.

    :class:`UnsafePath` if a component is a symlink or not a directory."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            try:
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError as exc:
        os.close(fd)
        if exc.errno in _REFUSED:
            raise _refusal(rel or "/".join(parts), exc) from exc
        raise
    return fd


@contextlib.contextmanager
def _parent(root_fd: int, relpath: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    parts = _parts(relpath)
    fd = open_dir(root_fd, parts[:-1], create=create, rel=relpath)
    try:
        yield fd, parts[-1]
    finally:
        os.close(fd)


def open_regular(root_fd: int, relpath: str, *, single_link: bool = False) -> int:
    """A read-only fd of the regular file ``root_fd/relpath``: never follows a symlink, never
    blocks on a FIFO or device (refused after ``fstat``), refuses a file with other hard links
    when ``single_link`` (a name linked in from elsewhere)."""
    with _parent(root_fd, relpath) as (dir_fd, name):
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _REFUSED:
                raise _refusal(relpath, exc) from exc
            raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(
                f"refused {relpath!r}: it is not a regular file (a FIFO, socket, device or "
                "directory took its place); only regular files are transferred"
            )
        if single_link and st.st_nlink > 1:
            raise UnsafePath(
                f"refused {relpath!r}: it has {st.st_nlink} hard links; the provider only "
                "sends files with one name: copy it (cp) instead of linking it"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int, chunk_size: int = 1 << 20, *, limit: int | None = None) -> Iterator[bytes]:
    """The bytes of ``fd`` from its current offset; closes it at the end. ``limit``: at most
    that many bytes are read (:class:`ProtocolError` if the file holds more)."""
    try:
        total = 0
        while chunk := os.read(fd, chunk_size):
            total += len(chunk)
            if limit is not None and total > limit:
                raise ProtocolError(
                    f"a file grew past the {limit} bytes it had when listed; "
                    "list the directory again and retry"
                )
            yield chunk
    finally:
        os.close(fd)


def lstat_at(root_fd: int, relpath: str) -> os.stat_result | None:
    """``lstat`` of ``root_fd/relpath`` (None when absent), parents walked without links."""
    try:
        with _parent(root_fd, relpath) as (dir_fd, name):
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _refuse_link(dir_fd: int, name: str, relpath: str) -> None:
    # the rename after it would replace the link, never follow it; refusing keeps someone's
    # link intact and says why
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise UnsafePath(f"refused {relpath!r}: it is a symlink; remove the link and retry")


def link_atomic(
    src: str | os.PathLike[str], root_fd: int, relpath: str, *, mtime_ns: int | None = None
) -> None:
    """Hard-link the caller's own file ``src`` to ``root_fd/relpath`` (parents made), through a
    temp name renamed over the target, as :func:`write_atomic` does."""
    with _parent(root_fd, relpath, create=True) as (dir_fd, name):
        _refuse_link(dir_fd, name, relpath)
        tmp = f".{name[:32]}.partial-{secrets.token_hex(4)}"
        os.link(src, tmp, dst_dir_fd=dir_fd)
        try:
            if mtime_ns is not None:
                os.utime(tmp, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise


def write_atomic(
    root_fd: int,
    relpath: str,
    chunks: Iterable[bytes],
    *,
    sha256: str | None = None,
    mtime_ns: int | None = None,
    mode: int = 0o644,
    limit: int | None = None,
) -> int:
    """Write ``chunks`` to ``root_fd/relpath`` (parents made) through a temp name in the same
    directory fd, renamed over the target only when complete (and hashing to ``sha256`` when
    given). Returns the size. ``limit``: refuse more than that many bytes. A symlink at the
    target is refused (a race past that check only replaces the link, never writes through)."""
    with _parent(root_fd, relpath, create=True) as (dir_fd, name):
        _refuse_link(dir_fd, name, relpath)
        tmp = f".{name[:32]}.partial-{secrets.token_hex(4)}"
        fd = os.open(tmp, _TEMP_FLAGS, mode, dir_fd=dir_fd)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb", closefd=False) as f:
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise ProtocolError(
                            f"{relpath}: more than the {limit} bytes announced; the transfer "
                            "was dropped, retry it"
                        )
                    digest.update(chunk)
                    f.write(chunk)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ProtocolError(
                    f"received bytes for {name} hash to {digest.hexdigest()}, "
                    f"not the announced {sha256}; the transfer was dropped, retry it"
                )
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            tmp = ""
        finally:
            os.close(fd)
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
    return size


def chown_tree(path: str | os.PathLike[str], uid: int, gid: int, *, max_depth: int = 256) -> None:
    """``chown -hR uid:gid path`` through directory fds: a directory swapped for a symlink
    meanwhile is never entered, a symlink itself is re-owned, never its target. Directories
    deeper than ``max_depth`` keep their owner (best effort, like the rest: errors skipped)."""
    fd = open_root(path)
    try:
        os.chown(fd, uid, gid)
        _chown_below(fd, uid, gid, max_depth)
    finally:
        os.close(fd)


def _chown_below(dir_fd: int, uid: int, gid: int, depth: int) -> None:
    try:
        with os.scandir(dir_fd) as it:
            names = [entry.name for entry in it]
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        if depth <= 0:
            continue
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue  # not a directory (or no longer one)
        try:
            _chown_below(sub, uid, gid, depth - 1)
        finally:
            os.close(sub)


@dataclass
class TreeUsage:
    """What :func:`tree_usage` found: bytes allocated, inodes (every entry, the root too), and
    whether the walk stopped early (``max_entries`` reached, or a directory deeper than
    ``max_depth`` left unopened: then ``too_deep``)."""

    bytes: int = 0
    inodes: int = 0
    complete: bool = True
    too_deep: bool = False


class _Stop(Exception):
    pass


def tree_usage(
    path: str | os.PathLike[str], *, max_entries: int, max_depth: int = 128
) -> TreeUsage:
    """``du`` of ``path`` through directory fds: st_blocks of every entry (a symlink counts its
    own size, never its target's), each directory opened with ``O_DIRECTORY | O_NOFOLLOW``
    relative to its parent's fd, so one swapped for a symlink meanwhile is skipped, never
    followed. Bounded: stops after ``max_entries`` entries and holds at most ``max_depth`` fds.
    """
    usage = TreeUsage()
    fd = open_root(path)
    try:
        st = os.fstat(fd)
        usage.bytes, usage.inodes = st.st_blocks * 512, 1
        _usage_below(fd, usage, max_entries, max_depth)
    except _Stop:
        usage.complete = False
    finally:
        os.close(fd)
    return usage


def _usage_below(dir_fd: int, usage: TreeUsage, max_entries: int, depth: int) -> None:
    subdirs: list[str] = []
    try:
        with os.scandir(dir_fd) as it:
            for entry in it:
                usage.inodes += 1
                if usage.inodes > max_entries:
                    raise _Stop
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                usage.bytes += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(entry.name)
    except OSError:
        return
    for name in subdirs:  # the listing is closed first: one fd per level
        if depth <= 0:
            usage.too_deep = True
            raise _Stop
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue  # no longer a directory (a symlink now: never followed)
        try:
            _usage_below(sub, usage, max_entries, depth - 1)
        finally:
            os.close(sub)
