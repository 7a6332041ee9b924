"""The agent's compute for the seeded challenge: matrices, rounds, row sums and the VRAM fill,
on the best backend this machine has. Blocking code: the challenge session runs it in a worker
thread, and every loop checks ``cancel`` so a renter that gave up stops the work.

Backends, first that works: torch on a CUDA/ROCm device (TF32 off for FP32), cupy, numpy on the
CPU, pure Python (:mod:`~jupyter_gpumarket.core.challenge_reference`'s arithmetic). The recipe
for the matrices is the one drawn in :mod:`~jupyter_gpumarket.core.challenge`; the VRAM fill is
:mod:`~jupyter_gpumarket.core.vram_proof`'s. A CPU backend refuses sizes it cannot finish in
reasonable time (``max_n``, ``max_fill_mib``) instead of computing for hours.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from typing import Any

from jupyter_gpumarket.core import challenge as ch
from jupyter_gpumarket.core.challenge_reference import row_sums as py_row_sums
from jupyter_gpumarket.core.seeded import MASK32, MIX_A, MIX_B
from jupyter_gpumarket.core.vram_proof import VramSpec, fill_word
from jupyter_gpumarket.exceptions import AgentError

__all__ = ["Backend", "Cancelled", "pick_backend"]

_SCALES = (2.0**-7, 2.0**-8, 2.0**-9, 2.0**-10)
_CHUNK_WORDS = 1 << 24  # 128 MiB int64 temporaries on top of the fill


class Cancelled(AgentError):
    """The renter went away (or a deadline passed): the work stopped."""


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise Cancelled("the challenge was cancelled")


def _mix(x: Any) -> Any:
    """core.seeded.mix32 on an int64 array/tensor (values in [0, 2**32))."""
    x = x ^ (x >> 16)
    x = (x * MIX_A) & MASK32
    x = x ^ (x >> 15)
    x = (x * MIX_B) & MASK32
    return x ^ (x >> 16)


class Backend:
    """Pure Python: exact products rounded to float32 (small ``n`` only)."""

    name = "cpu"
    device = "python"
    max_n = 160
    max_flops = 5e7  # ~ 5 s of pure Python
    max_fill_mib = 2

    # -- matmul ----------------------------------------------------------------------------
    def prepare(self, spec: ch.MatmulSpec, cancel: threading.Event) -> Any:
        keys = ch.matrix_keys(spec)
        a = []
        for i in range(spec.n):
            _check(cancel)
            a.append(ch._a_row(spec, keys, i))
        cols = [ch._b_col(spec, keys, j) for j in range(spec.n)]
        return a, cols

    def product(
        self, spec: ch.MatmulSpec, mats: Any, r: int, cancel: threading.Event
    ) -> list[array[float]]:
        a, cols = mats
        signs = ch.round_signs(spec, r)
        scale = ch._SCALE**2
        out = []
        for row in a:
            _check(cancel)
            sr = [s * x for s, x in zip(signs, row, strict=True)]
            out.append(
                array("f", (sum(x * y for x, y in zip(sr, c, strict=True)) * scale for c in cols))
            )
        return out

    def row_sums(self, product: Any) -> bytes:
        return py_row_sums(product)

    def rows(self, product: Any, indices: list[int]) -> list[bytes]:
        return [ch.encode_f32(product[i]) for i in indices]

    def trim(self) -> None:
        """Give cached device memory back (after a step, never inside the timed rounds)."""

    # -- VRAM ------------------------------------------------------------------------------
    def fill(self, spec: VramSpec, cancel: threading.Event) -> Any:
        keys = spec.keys
        words = array("I")
        for w in range(spec.words):
            if w % 65536 == 0:
                _check(cancel)
            words.append(fill_word(spec, w, keys))
        return words

    def slice_digest(self, buf: Any, offset: int, length: int) -> bytes:
        part = buf[offset : offset + length]
        return hashlib.sha256(part.tobytes()).digest()


class _ArrayBackend(Backend):
    """numpy / cupy / torch: the same recipe on int64 arrays, one matmul per round."""

    xp: Any

    def _arange(self, start: int, stop: int) -> Any:
        raise NotImplementedError

    def _scales(self) -> Any:
        raise NotImplementedError

    def _to_float(self, x: Any) -> Any:
        raise NotImplementedError

    def _cast(self, x: Any, precision: str) -> Any:
        raise NotImplementedError

    def _matmul(self, a: Any, b: Any, precision: str) -> Any:
        return a @ b

    def _to_bytes(self, x: Any) -> bytes:
        raise NotImplementedError

    def _store(self, words: Any) -> Any:
        raise NotImplementedError

    def _empty(self, count: int) -> Any:
        raise NotImplementedError

    def _matrix(self, spec: ch.MatmulSpec, k1: int, k2: int) -> Any:
        h = _mix(_mix((self._arange(0, spec.n * spec.n) ^ k1) & MASK32) ^ k2)
        v = self._to_float(128 + (h & 127)) * self._scales()[(h >> 7) & 3]
        neg = ((h >> 9) & 1) == 1
        v = self.xp.where(neg, -v, v)
        return self._cast(v.reshape(spec.n, spec.n), spec.precision)

    def prepare(self, spec: ch.MatmulSpec, cancel: threading.Event) -> Any:
        a1, a2, b1, b2 = ch.matrix_keys(spec)
        a = self._matrix(spec, a1, a2)
        _check(cancel)
        return a, self._matrix(spec, b1, b2)

    def _signs(self, spec: ch.MatmulSpec, r: int) -> Any:
        k1, k2 = ch.round_keys(spec, r)
        h = _mix(_mix((self._arange(0, spec.n) ^ k1) & MASK32) ^ k2)
        return self._cast(1.0 - 2.0 * self._to_float(h & 1), spec.precision)

    def product(self, spec: ch.MatmulSpec, mats: Any, r: int, cancel: threading.Event) -> Any:
        _check(cancel)
        a, b = mats
        out = self._matmul(a * self._signs(spec, r)[None, :], b, spec.precision)
        return self._cast(out, "fp32")

    def row_sums(self, product: Any) -> bytes:
        return self._to_bytes((product * product).sum(1))

    def rows(self, product: Any, indices: list[int]) -> list[bytes]:
        return [self._to_bytes(product[i]) for i in indices]

    def fill(self, spec: VramSpec, cancel: threading.Event) -> Any:
        k1, k2 = spec.keys
        buf = self._empty(spec.words)
        for start in range(0, spec.words, _CHUNK_WORDS):
            _check(cancel)
            idx = self._arange(start, min(start + _CHUNK_WORDS, spec.words))
            lo, hi = idx & MASK32, idx >> 32
            words = _mix(_mix(lo ^ k1) ^ ((k2 + hi * 0x9E37) & MASK32))
            buf[start : start + len(idx)] = self._store(words)
        return buf

    def slice_digest(self, buf: Any, offset: int, length: int) -> bytes:
        return hashlib.sha256(self._to_bytes(buf[offset : offset + length])).digest()


class _NumpyBackend(_ArrayBackend):
    name, device, max_n, max_fill_mib = "cpu", "numpy", 2048, 512
    max_flops = 2e12

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def _arange(self, start: int, stop: int) -> Any:
        return self.xp.arange(start, stop, dtype=self.xp.int64)

    def _scales(self) -> Any:
        return self.xp.asarray(_SCALES, dtype=self.xp.float32)

    def _to_float(self, x: Any) -> Any:
        return x.astype(self.xp.float32)

    def _cast(self, x: Any, precision: str) -> Any:
        x = x.astype(self.xp.float32)
        if precision == "fp16":
            return x.astype(self.xp.float16).astype(self.xp.float32)
        if precision == "bf16":  # round to nearest even on the top 16 bits
            bits = x.view(self.xp.uint32)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            return bits.astype(self.xp.uint32).view(self.xp.float32)
        return x

    def _to_bytes(self, x: Any) -> bytes:
        host = x.get() if hasattr(x, "get") else x  # cupy -> numpy
        return bytes(host.astype("<f4" if host.dtype.kind == "f" else "<u4").tobytes())

    def _store(self, words: Any) -> Any:
        return words.astype(self.xp.uint32)

    def _empty(self, count: int) -> Any:
        return self.xp.empty(count, dtype=self.xp.uint32)


class _CupyBackend(_NumpyBackend):
    name, device, max_n, max_fill_mib = "cuda", "cupy", ch.MAX_N, 1 << 22
    max_flops = 4e15  # ~2 s of BF16 on the fastest GPU in the table; plans ask for ~0.25 s


class _TorchBackend(_ArrayBackend):
    max_n, max_fill_mib, max_flops = ch.MAX_N, 1 << 22, 4e15

    def __init__(self, torch: Any) -> None:
        self.xp = torch
        self.dev = torch.device("cuda")
        self.name = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        self.device = str(torch.cuda.get_device_name(0))
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        # FP32 accumulation for BF16/FP16 too: the renter's tolerance assumes it
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False

    def _arange(self, start: int, stop: int) -> Any:
        return self.xp.arange(start, stop, dtype=self.xp.int64, device=self.dev)

    def _scales(self) -> Any:
        return self.xp.tensor(_SCALES, dtype=self.xp.float32, device=self.dev)

    def _to_float(self, x: Any) -> Any:
        return x.to(self.xp.float32)

    def _cast(self, x: Any, precision: str) -> Any:
        t = self.xp
        return x.to(
            {"fp32": t.float32, "tf32": t.float32, "bf16": t.bfloat16}.get(precision, t.float16)
        )

    def _matmul(self, a: Any, b: Any, precision: str) -> Any:
        t = self.xp
        t.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        try:
            out = a @ b
            t.cuda.synchronize()
        finally:
            t.backends.cuda.matmul.allow_tf32 = False
        return out

    def row_sums(self, product: Any) -> bytes:
        return super().row_sums(product.to(self.xp.float32))

    def _to_bytes(self, x: Any) -> bytes:
        raw = x.contiguous().cpu().view(self.xp.uint8)
        try:
            return bytes(raw.numpy().tobytes())
        except RuntimeError:  # torch built without numpy
            return bytes(raw.tolist())

    def _store(self, words: Any) -> Any:
        return self.xp.where(words >= 2**31, words - 2**32, words).to(self.xp.int32)

    def _empty(self, count: int) -> Any:
        return self.xp.empty(count, dtype=self.xp.int32, device=self.dev)

    def trim(self) -> None:
        self.xp.cuda.empty_cache()


def pick_backend(*, gpu: bool = True) -> Backend:
    """The best backend importable here; ``gpu=False`` (a CPU-only agent) skips the GPU ones."""
    if gpu:
        try:
            import torch

            if torch.cuda.is_available():
                return _TorchBackend(torch)
        except Exception:  # a broken torch install is just "no torch"
            pass
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                return _CupyBackend(cupy)
        except Exception:  # likewise for cupy
            pass
    try:
        import numpy

        return _NumpyBackend(numpy)
    except ImportError:
        return Backend()
