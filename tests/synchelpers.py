"""Shared helpers of the file-sync tests (core/filesync and filescan)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hypothesis import strategies as st

from jupyter_gpumarket.core.filesync import FileEntry, Manifest

__all__ = ["TRICKY_PATHS", "entry", "manifest", "sha", "stays_inside", "write"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(data: bytes, mtime_ns: int = 1) -> FileEntry:
    return FileEntry(len(data), sha(data), mtime_ns)


def manifest(**files: bytes) -> Manifest:
    return Manifest({path.replace("__", "/"): entry(data) for path, data in files.items()})


def write(root: Path, rel: str, data: bytes = b"x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# Path pieces that try to climb out: .., absolute, NUL, backslash, a drive, links in and out.
TRICKY_PATHS = st.lists(
    st.sampled_from(["a", "..", ".", "", "out", "inlink", "outlink", "/", "\\", "\x00", "C:"]),
    max_size=6,
).map("/".join)


def stays_inside(root: Path, path: str | os.PathLike[str]) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real != real_root and os.path.commonpath([real_root, real]) == real_root
