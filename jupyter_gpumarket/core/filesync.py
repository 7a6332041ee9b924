"""Notebook file sync: which paths are safe, what to send, what to bring back.

The decisions are pure functions over :class:`Manifest` values (``safe_relpath``, ``check_cap``,
``plan_upload``, ``plan_pull``); the I/O (``scan``, ``resolve_inside``, ``read_chunks``,
``write_verified``) is in :mod:`jupyter_gpumarket.filescan`, used by both renter and agent.

Sync is content-addressed: a blob is a file's bytes named by their SHA-256, the agent keeps the
blobs it has received, and the renter sends only the blobs the agent lacks, so a second launch
with nothing changed sends no file bytes at all.

Paths on the wire are relative POSIX paths, normalized by :func:`safe_relpath`; anything that is
absolute, climbs out with ``..``, or resolves through a symlink outside the working dir is refused
with :class:`~jupyter_gpumarket.exceptions.UnsafePath` on whichever side receives it.

A manifest comes from the other side, so building one costs time and memory linear in its
size, with hard limits checked before any structure is built: at most :data:`MAX_ENTRIES` files,
:data:`MAX_DIRS` directories, :data:`MAX_DEPTH` levels, 4096-byte paths of 255-byte names.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import pathspec

from jupyter_gpumarket.core.pathfold import NameTree, fold_name, is_denied_name
from jupyter_gpumarket.exceptions import ProtocolError, SyncTooLarge, UnsafePath

__all__ = [
    "DEFAULT_CAP_BYTES",
    "DEFAULT_IGNORES",
    "HASH_CHUNK_BYTES",
    "IGNORE_FILE",
    "MAX_DEPTH",
    "MAX_DIRS",
    "MAX_ENTRIES",
    "RACY_NS",
    "VENV_MARKER",
    "Blob",
    "Conflict",
    "FileEntry",
    "Manifest",
    "PullItem",
    "PullPlan",
    "Skipped",
    "UploadPlan",
    "check_cap",
    "conflict_name",
    "format_bytes",
    "ignore_spec",
    "is_sha256_hex",
    "plan_pull",
    "plan_upload",
    "safe_relpath",
]

DEFAULT_CAP_BYTES = 500 * 1000 * 1000
IGNORE_FILE = ".gpumarketignore"
# Directories that are never synced in either direction (gitignore syntax). A user's
# .gpumarketignore is appended, so `!node_modules/` there re-includes one of these.
DEFAULT_IGNORES = (
    ".git/",
    ".ipynb_checkpoints/",
    "__pycache__/",
    ".venv/",
    "venv/",
    "node_modules/",
    ".gpumarket/",
)
# Never brought back from the remote side whatever the user's ignore file says: a provider must
# not be able to plant git hooks or virtualenv scripts in the renter's directory. Compared as
# folded names (core.pathfold), in any position: `.GIT/config` is `.git/config` on macOS.
_NEVER_PULLED = frozenset(fold_name(line.strip("/")) for line in DEFAULT_IGNORES)
# Limits of one manifest (a real notebook project fits well inside them; the sync cap in bytes
# is separate). They bound the work a peer's manifest costs before anything is built.
MAX_ENTRIES = 100_000
MAX_DIRS = 100_000
MAX_DEPTH = 64
VENV_MARKER = "pyvenv.cfg"  # the file that marks a directory as a virtualenv
_MAX_NAME_BYTES = 255
_MAX_PATH_BYTES = 4096
_HEX = frozenset("0123456789abcdef")
HASH_CHUNK_BYTES = 1 << 20  # read size when hashing a file
# A file modified this recently may change again within one timestamp tick: hash it anew.
RACY_NS = 2_000_000_000


def is_sha256_hex(value: object) -> bool:
    """True for a lowercase 64-digit hex string (how blobs are named everywhere)."""
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def format_bytes(n: int) -> str:
    """Human size in decimal units, for messages and progress ("12.3 MB")."""
    if n < 1000:
        return f"{n} B"
    value = n / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _is_drive(name: str) -> bool:
    return len(name) > 1 and name[1] == ":" and name[0].isascii() and name[0].isalpha()


def _refused(path: str, why: str) -> UnsafePath:
    return UnsafePath(
        f"refused file path {path[:120]!r}: {why}; only relative paths inside the "
        "notebook directory can be synced"
    )


def safe_relpath(path: str) -> str:
    """Validate a relative path that came from the other side; return it normalized.

    Accepts ``a/b.txt``, ``./a//b.txt`` (-> ``a/b.txt``). Refuses, with :class:`UnsafePath`:
    non-strings, empty paths, NUL, backslashes (a Windows separator that POSIX would treat as
    a name), absolute paths and drive letters, ``..`` components, names that are not valid
    UTF-8, and names or paths too long for a filesystem.
    """
    if not isinstance(path, str):
        raise UnsafePath(f"file path must be a string, got {type(path).__name__}")
    refuse = functools.partial(_refused, path)  # the message is built only on refusal
    if not path:
        raise refuse("it is empty")
    if len(path) > 2 * _MAX_PATH_BYTES:  # before splitting: bounds the work on a huge string
        raise refuse(f"it is longer than {_MAX_PATH_BYTES} bytes")
    if "\x00" in path:
        raise refuse("it contains a NUL byte")
    if "\\" in path:
        raise refuse("it contains a backslash; use '/' as the separator")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if path.startswith("/") or (parts and _is_drive(parts[0])):
        raise refuse("it is absolute")
    if not parts:
        raise refuse("it names the working dir itself, not a file in it")
    if ".." in parts:
        raise refuse("it climbs out of the working dir with '..'")
    if path.isascii():  # the common case: one byte per character
        lengths = list(map(len, parts))
    else:
        try:
            lengths = [len(part.encode("utf-8")) for part in parts]
        except UnicodeEncodeError:
            raise refuse("it is not valid UTF-8") from None
    if max(lengths) > _MAX_NAME_BYTES:
        raise refuse(f"a name in it is longer than {_MAX_NAME_BYTES} bytes")
    if sum(lengths) + len(lengths) > _MAX_PATH_BYTES:
        raise refuse(f"it is longer than {_MAX_PATH_BYTES} bytes")
    if len(parts) > MAX_DEPTH:
        raise refuse(f"it is nested {len(parts)} levels deep, more than {MAX_DEPTH}")
    return "/".join(parts)


@dataclass(frozen=True)
class FileEntry:
    """One file's size, content hash and modification time (nanoseconds)."""

    size: int
    sha256: str
    mtime_ns: int

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ProtocolError(f"FileEntry.size must be an int >= 0, got {self.size!r}")
        if not is_sha256_hex(self.sha256):
            raise ProtocolError(
                f"FileEntry.sha256 must be 64 lowercase hex digits, got {self.sha256!r}"
            )
        mtime_ns = self.mtime_ns
        if not isinstance(mtime_ns, int) or isinstance(mtime_ns, bool) or abs(mtime_ns) >= 2**63:
            raise ProtocolError(f"FileEntry.mtime_ns must be a 64-bit int, got {mtime_ns!r}")


@dataclass(frozen=True)
class Skipped:
    """A path that was left out on purpose, and why (for the log / the user)."""

    path: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    """Relative POSIX path -> :class:`FileEntry`, plus what a scan skipped and why."""

    files: Mapping[str, FileEntry] = field(default_factory=dict)
    skipped: tuple[Skipped, ...] = ()

    def __post_init__(self) -> None:
        _check_count(len(self.files))
        checked: dict[str, FileEntry] = {}
        for path, entry in self.files.items():
            normalized = safe_relpath(path)
            if normalized != path:
                raise UnsafePath(
                    f"manifest path {path[:120]!r} is not normalized "
                    f"(expected {normalized[:120]!r})"
                )
            if not isinstance(entry, FileEntry):
                raise ProtocolError(f"manifest entry for {path!r} must be a FileEntry")
            checked[path] = entry
        _tree_of(checked)
        object.__setattr__(self, "files", MappingProxyType(dict(sorted(checked.items()))))
        object.__setattr__(self, "skipped", tuple(self.skipped))

    def __len__(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def hashes(self) -> frozenset[str]:
        return frozenset(entry.sha256 for entry in self.files.values())

    def to_json(self) -> dict[str, object]:
        """Wire form: ``{"files": {path: [size, sha256, mtime_ns]}}`` (skipped stays local)."""
        return {"files": {p: [e.size, e.sha256, e.mtime_ns] for p, e in self.files.items()}}

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        """Parse the wire form from the peer; anything malformed is a :class:`ProtocolError`."""
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            raise ProtocolError("manifest must be a JSON object with a 'files' object")
        _check_count(len(files))
        entries: dict[str, FileEntry] = {}
        for path, value in files.items():
            if not (isinstance(value, list) and len(value) == 3):
                shown = path[:120] if isinstance(path, str) else path
                raise ProtocolError(
                    f"manifest entry for {shown!r} must be [size, sha256, mtime_ns]"
                )
            entries[path] = FileEntry(*value)  # Manifest refuses unnormalized paths
        return cls(entries)


def _check_count(n: int) -> None:
    if n > MAX_ENTRIES:
        raise SyncTooLarge(
            f"the file list has {n:,} files, more than the {MAX_ENTRIES:,} one sync takes: "
            f"exclude what the kernel does not need in {IGNORE_FILE} (gitignore syntax)"
        )


def _tree_of(paths: Iterable[str]) -> NameTree:
    tree = NameTree(max_dirs=MAX_DIRS)
    for path in paths:
        try:
            clash = tree.add(path)
        except OverflowError:
            raise SyncTooLarge(
                f"the file list spans more than {MAX_DIRS:,} directories, more than one sync "
                f"takes: exclude what the kernel does not need in {IGNORE_FILE} (gitignore syntax)"
            ) from None
        if clash is not None:
            where = clash[1] if clash[0] == "file" else path
            raise ProtocolError(f"manifest names {where[:120]!r} both as a file and as a directory")
    return tree


@dataclass(frozen=True)
class Blob:
    """A blob to send: its hash, its size, and one local file that holds those bytes."""

    sha256: str
    size: int
    path: str


@dataclass(frozen=True)
class UploadPlan:
    """What a launch sends: the full manifest (so the agent can lay out every file) and only
    the blobs the agent lacks. ``total_bytes`` is the denominator for progress."""

    manifest: Manifest
    blobs: tuple[Blob, ...]

    @property
    def total_bytes(self) -> int:
        return sum(blob.size for blob in self.blobs)

    @property
    def reused_bytes(self) -> int:
        """Bytes of the manifest that need not travel (already remote or duplicated)."""
        return self.manifest.total_bytes - self.total_bytes


def plan_upload(local: Manifest, remote_hashes: Iterable[str] | Manifest) -> UploadPlan:
    """Send each distinct blob of ``local`` the remote side does not already hold."""
    have = remote_hashes.hashes() if isinstance(remote_hashes, Manifest) else set(remote_hashes)
    if bad := next((h for h in have if not is_sha256_hex(h)), None):
        raise ProtocolError(f"remote blob hash {bad!r} is not 64 lowercase hex digits")
    blobs: dict[str, Blob] = {}
    for path, entry in local.files.items():
        if entry.sha256 not in have and entry.sha256 not in blobs:
            blobs[entry.sha256] = Blob(entry.sha256, entry.size, path)
    return UploadPlan(local, tuple(blobs.values()))


def check_cap(
    sizes: Iterable[tuple[str, int]],
    cap_bytes: int,
    *,
    where: str = "the notebook directory",
    cap_hint: str = "the sync cap",
) -> None:
    """Raise :class:`SyncTooLarge` naming the biggest files when the total exceeds the cap."""
    listing = list(sizes)
    total = sum(size for _, size in listing)
    if total <= cap_bytes:
        return
    biggest = sorted(listing, key=lambda item: (-item[1], item[0]))[:5]
    names = ", ".join(f"{path} ({format_bytes(size)})" for path, size in biggest)
    raise SyncTooLarge(
        f"{where} holds {format_bytes(total)} to sync, above the {format_bytes(cap_bytes)} cap, "
        f"so nothing was synced. Biggest files: {names}. Exclude what the kernel does not need "
        f"in {IGNORE_FILE} (gitignore syntax, e.g. a line '{biggest[0][0]}') or raise {cap_hint}."
    )


def ignore_spec(lines: Iterable[str] = ()) -> pathspec.GitIgnoreSpec:
    """The default ignores followed by the user's lines (gitignore syntax)."""
    return pathspec.GitIgnoreSpec.from_lines([*DEFAULT_IGNORES, *lines])


@dataclass(frozen=True)
class PullItem:
    """Bring remote ``remote_path`` (blob ``sha256``) back as local ``local_path``."""

    remote_path: str
    local_path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Conflict:
    """A file changed on both sides; the remote copy was saved beside it under ``saved_as``."""

    path: str
    saved_as: str
    message: str


@dataclass(frozen=True)
class PullPlan:
    items: tuple[PullItem, ...]
    conflicts: tuple[Conflict, ...]
    skipped: tuple[Skipped, ...]

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.items)


def conflict_name(path: str, sha256: str, length: int = 8) -> str:
    """``dir/name.ext`` -> ``dir/name.remote-<shorthash>.ext`` (dotfiles keep their name)."""
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a dotfile such as ".env"
        stem, dot, ext = name, "", ""
    tail = f".remote-{sha256[:length]}{dot}{ext}"
    room = _MAX_NAME_BYTES - len(tail.encode("utf-8"))
    stem = stem.encode("utf-8")[: max(room, 1)].decode("utf-8", "ignore") or "_"
    renamed = f"{stem}{tail}"[-_MAX_NAME_BYTES:]  # a huge extension loses its start, not the hash
    return f"{head}/{renamed}" if head else renamed


def plan_pull(
    remote: Manifest, local_now: Manifest, local_at_launch: Manifest, *, ignore: Iterable[str] = ()
) -> PullPlan:
    """Decide which remote files to bring back, never overwriting a local change.

    A remote file is brought back when the kernel created or changed it (its hash differs from
    what was sent at launch). It goes to its own path when the local file is unchanged since
    launch (or absent); when the local file changed too, the remote copy is saved as
    :func:`conflict_name` and a :class:`Conflict` says so. Remote deletions are not applied.
    Ignored paths (defaults, ``ignore`` lines) are never written locally; the defaults are
    compared as a case-insensitive filesystem would (``.Git/config``, ``.git./hooks/x``,
    ``GIT~1/config`` are all ``.git``), and a remote file that such a filesystem would store
    over another local or pulled file of a different spelling is left there.
    """
    user_spec = pathspec.GitIgnoreSpec.from_lines(list(ignore))
    taken = NameTree(fold_name)
    for local in local_now.files:
        taken.add(local)
    items: list[PullItem] = []
    conflicts: list[Conflict] = []
    skipped: list[Skipped] = []
    for path, entry in remote.files.items():
        now, then = local_now.files.get(path), local_at_launch.files.get(path)
        if (now and now.sha256 == entry.sha256) or (then and then.sha256 == entry.sha256):
            continue  # same bytes here already, or the kernel left the launched copy alone
        if _never_pulled(path) or user_spec.match_file(path):
            skipped.append(Skipped(path, "ignored (defaults or .gpumarketignore); not written"))
            continue
        dest = path
        unchanged_here = (now.sha256 if now else None) == (then.sha256 if then else None)
        if now is not None and not unchanged_here:
            beside = _conflict_dest(path, entry.sha256, local_now)
            if beside is None:
                continue  # this remote copy was already saved beside the local file
            if not beside:
                skipped.append(Skipped(path, "changed on both sides; no free conflict name"))
                continue
            dest = beside
            why = "changed both locally and in the remote kernel since launch"
            message = f"{path} {why}; kept the local file, saved the remote copy as {dest}"
            conflicts.append(Conflict(path, dest, message))
        clash = taken.add(dest)
        if clash is not None:
            kind, there = clash
            why = f"local file {there!r} is in the way" if kind == "file" else "a local directory"
            skipped.append(Skipped(path, f"cannot write {dest}: {why}; remote copy left there"))
            continue
        items.append(PullItem(path, dest, entry.sha256, entry.size))
    return PullPlan(tuple(items), tuple(conflicts), tuple(skipped))


def _conflict_dest(path: str, sha256: str, local_now: Manifest) -> str | None:
    """A free conflict name; None if the same remote copy is already there; "" if none free."""
    for length in (8, 16, 64):
        candidate = conflict_name(path, sha256, length)
        there = local_now.files.get(candidate)
        if there is None:
            return candidate
        if there.sha256 == sha256:
            return None
    return ""


def _never_pulled(path: str) -> bool:
    return any(is_denied_name(fold_name(name), _NEVER_PULLED) for name in path.split("/"))
