"""What a kernel's working-dir usage means: the warnings before its disk quota or inode limit,
and the reason it is stopped past them (agent.kernels measures, with safefs.TreeUsage)."""

from __future__ import annotations

from jupyter_gpumarket.safefs import TreeUsage

__all__ = ["DISK_WARN_FRACTION", "quota_stop_reason", "quota_warnings"]

DISK_WARN_FRACTION = 0.8  # tell the notebook before the quota stops the kernel
_MB = 1024 * 1024


def quota_warnings(usage: TreeUsage, quota: int | None, inodes: int) -> list[tuple[str, str]]:
    """(kind, text) for each limit the working dir is close to: disk bytes, then inodes."""
    out = []
    if quota is not None and usage.bytes > quota * DISK_WARN_FRACTION:
        out.append((
            "disk",
            f"the kernel's working dir uses {usage.bytes // _MB} MB of its {quota // _MB} MB disk "
            "quota; past the quota the provider stops the kernel: delete files you no longer need",
        ))  # fmt: skip
    if usage.inodes > inodes * DISK_WARN_FRACTION:
        out.append((
            "inodes",
            f"the kernel's working dir holds {usage.inodes} of its {inodes} files and "
            "directories; past the limit the provider stops the kernel: delete files you no "
            "longer need",
        ))  # fmt: skip
    return out


def quota_stop_reason(usage: TreeUsage, quota: int | None, inodes: int) -> str:
    """Why the kernel must stop (too deep, too many entries, over the quota), or ""."""
    if usage.too_deep:
        return (
            "the kernel's working dir nests directories deeper than the provider measures, so "
            "the provider stopped the kernel; keep directory trees shallower"
        )
    if usage.inodes > inodes:
        return (
            f"the kernel's working dir holds more than {inodes} files and directories, over its "
            "limit, so the provider stopped the kernel; delete files before making more, or "
            "pick an offer with a higher file limit"
        )
    if quota is not None and usage.bytes > quota:
        return (
            f"the kernel's working dir used {usage.bytes // _MB} MB, over its disk quota of "
            f"{quota // _MB} MB, so the provider stopped the kernel; delete files "
            "before writing more, or pick an offer with more disk"
        )
    return ""
