"""A seccomp filter that keeps a root-mode kernel from creating user namespaces.

A kernel sandboxed by a root agent runs under privileged bwrap as its slot's uid, so bwrap's
``--disable-userns`` (which needs a user namespace of bwrap's own) is not available; yet a user
namespace would hand the renter a fresh set of capabilities over new namespaces, the kernel
attack surface container runtimes keep from untrusted code. This classic-BPF program, passed to
bwrap with ``--seccomp FD``, makes ``unshare``/``clone`` with ``CLONE_NEWUSER`` fail with EPERM
and ``clone3`` (whose flags live in memory a filter cannot read) fail with ENOSYS, so glibc falls
back to ``clone`` (the same choice as Docker's and Flatpak's profiles). Every other call passes.

:func:`userns_filter` is pure (the program for an architecture, or None where this module has no
syscall table: there, user namespaces stay possible and the agent logs so);
:func:`filter_fd` and :func:`userns_filter_fd` are the I/O that hand the program to bwrap.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import platform
import struct

__all__ = ["CLONE_NEWUSER", "filter_fd", "userns_filter", "userns_filter_fd"]

log = logging.getLogger(__name__)

CLONE_NEWUSER = 0x10000000

# linux/filter.h, linux/seccomp.h
_LD_W_ABS = 0x20
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45  # BPF_JMP | op | BPF_K
_RET = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_OFF_NR, _OFF_ARCH, _OFF_ARG0_LOW = 0, 4, 16  # struct seccomp_data, little-endian
_X32_BIT = 0x40000000

# AUDIT_ARCH_* -> (clone, unshare, clone3) numbers; the machine's own and its compat ABIs.
_SYSCALLS = {
    0xC000003E: (56, 272, 435),  # x86_64
    0x40000003: (120, 310, 435),  # i386 (int 0x80 from a 64-bit process)
    0xC00000B7: (220, 97, 435),  # aarch64
    0x40000028: (120, 337, 435),  # arm (aarch32 compat)
}
_MACHINES = {
    "x86_64": (0xC000003E, 0x40000003),
    "amd64": (0xC000003E, 0x40000003),
    "aarch64": (0xC00000B7, 0x40000028),
    "arm64": (0xC00000B7, 0x40000028),
}

_Insn = tuple[int, str | int, str | int, int]


def _assemble(program: list[_Insn | str]) -> bytes:
    """Label strings mark positions; jump targets are labels (or 0 = next instruction)."""
    labels: dict[str, int] = {}
    insns: list[_Insn] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(insns):
        offsets = [labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)]
        if any(not 0 <= o < 256 for o in offsets):
            raise ValueError(f"seccomp jump out of range at instruction {i}")
        out += struct.pack("<HBBI", code, offsets[0], offsets[1], k)
    return bytes(out)


def userns_filter(machine: str | None = None) -> bytes | None:
    """The filter for ``machine`` (``platform.machine()`` by default), or None if unknown."""
    arches = _MACHINES.get((machine or platform.machine()).lower())
    if arches is None:
        return None
    prog: list[_Insn | str] = [(_LD_W_ABS, 0, 0, _OFF_ARCH)]
    for arch in arches:
        prog.append((_JEQ, f"arch{arch}", 0, arch))
    prog.append((_RET, 0, 0, _ERRNO | errno.EPERM))  # an ABI this filter does not know
    for arch in arches:
        clone, unshare, clone3 = _SYSCALLS[arch]
        prog += [f"arch{arch}", (_LD_W_ABS, 0, 0, _OFF_NR)]
        if arch == 0xC000003E:
            prog.append((_JGE, "eperm", 0, _X32_BIT))  # x32 calls: nobody here needs them
        prog += [
            (_JEQ, "enosys", 0, clone3),
            (_JEQ, "flags", 0, unshare),
            (_JEQ, "flags", "allow", clone),
        ]
    prog += [
        "flags",
        (_LD_W_ABS, 0, 0, _OFF_ARG0_LOW),
        (_JSET, "eperm", "allow", CLONE_NEWUSER),
        "allow",
        (_RET, 0, 0, _ALLOW),
        "eperm",
        (_RET, 0, 0, _ERRNO | errno.EPERM),
        "enosys",
        (_RET, 0, 0, _ERRNO | errno.ENOSYS),
    ]
    return _assemble(prog)


def filter_fd(program: bytes) -> int:
    """A file descriptor at offset 0 of ``program`` for bwrap's ``--seccomp``; caller closes."""
    fd = os.memfd_create("gpm-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@functools.cache
def _machine_filter() -> bytes | None:
    program = userns_filter()
    if program is None:
        log.warning(
            "no seccomp filter for this architecture (%s): kernels of a root agent can create "
            "user namespaces here",
            platform.machine(),
        )
    return program


def userns_filter_fd() -> int | None:
    """An fd of this machine's filter for bwrap (caller closes), or None where there is none."""
    program = _machine_filter()
    return filter_fd(program) if program is not None else None
