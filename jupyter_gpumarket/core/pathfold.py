"""How a path looks to the filesystems a renter may have: the form used to compare names.

A provider chooses the names of the files a pull brings back. On macOS (APFS/HFS+) and Windows
(NTFS) many different strings name the same file: ``.Git``, ``.GIT`` and ``.git``; NFC and NFD
spellings; ``.git.`` and ``.git `` (Windows strips trailing dots and spaces); ``.git::$DATA``
(an NTFS stream of ``.git``); ``GIT~1`` (its 8.3 short name); ``.g\u200cit`` (HFS+ ignores some
code points). A deny-list or a collision check that compares exact strings lets all of these
through, so both compare :func:`fold_name` forms instead. Folding is deliberately broader than
any one filesystem (NFKC, full Unicode case folding): a deny-list may refuse a harmless name,
never let a dangerous one through.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["NameTree", "fold_name", "fold_path", "is_denied_name"]

# Unicode Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible in a name, and
# HFS+ drops several of them when comparing (git's is_hfs_dotgit checks the same set).
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_DROP = {cp: None for lo, hi in _IGNORABLE_RANGES for cp in range(lo, hi + 1)}
_SHORT_NAME = re.compile(r"^(?P<base>[^~]{1,6})~[0-9]+(\..*)?$")


def fold_name(name: str) -> str:
    """One path component as a case-, form- and Windows-insensitive key."""
    if name.isascii():  # the common case: only case and Windows' stripping apply
        folded = name.lower()
    else:
        cleaned = "".join(ch for ch in name.translate(_DROP) if unicodedata.category(ch) != "Cf")
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", cleaned).casefold())
    folded = folded.split(":", 1)[0]  # an NTFS alternate data stream names its file
    return folded.rstrip(". ")


def fold_path(path: str) -> str:
    """A relative POSIX path with every component folded (see :func:`fold_name`)."""
    return "/".join(fold_name(part) for part in path.split("/"))


def is_denied_name(folded: str, denied: frozenset[str]) -> bool:
    """True when a folded component is one of ``denied`` (folded names) or an 8.3 short
    name Windows may have given one of them (``GIT~1`` is ``.git``)."""
    if folded in denied:
        return True
    short = _SHORT_NAME.match(folded)
    if short is None:
        return False
    base = short.group("base")
    return any(name.lstrip(".")[:6] == base for name in denied)


class NameTree:
    """Files and directories of a set of paths, keyed by (parent id, name) per directory.

    Adding or checking a path costs time linear in its length whatever its depth (a set of
    every parent prefix costs O(depth²) per path, which a peer's manifest of deep paths turns
    into gigabytes). ``fold`` maps each name to the key compared (``str`` for exact names,
    :func:`fold_name` for how a case-insensitive filesystem compares them); ``max_dirs``
    bounds the directories it holds (``add`` raises :class:`OverflowError` beyond it).
    """

    def __init__(self, fold: Callable[[str], str] = str, max_dirs: int | None = None) -> None:
        self._fold = fold
        self._max_dirs = max_dirs
        self._dirs: dict[tuple[int, str], int] = {}
        self._files: dict[tuple[int, str], str] = {}

    def add(self, path: str) -> tuple[str, str] | None:
        """Record ``path`` as a file (its parents as directories), or return why it cannot be
        one, changing nothing: ``("file", p)`` when the file ``p`` sits where ``path`` needs a
        directory or is another spelling of ``path``; ``("dir", path)`` when it is a directory.
        (A clash is only ever found where every parent already existed, so nothing was added.)
        """
        *names, leaf = path.split("/")
        fold, dirs, files = self._fold, self._dirs, self._files
        node = 0
        for name in names:
            key = (node, fold(name))
            found = dirs.get(key)
            if found is None:
                other = files.get(key)
                if other is not None:
                    return ("file", other)
                if self._max_dirs is not None and len(dirs) >= self._max_dirs:
                    raise OverflowError(f"more than {self._max_dirs} directories")
                found = dirs[key] = len(dirs) + 1
            node = found
        key = (node, fold(leaf))
        if key in dirs:
            return ("dir", path)
        other = files.get(key)
        if other is not None and other != path:
            return ("file", other)
        files[key] = path
        return None
