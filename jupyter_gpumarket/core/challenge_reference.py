"""The honest answer to a matmul challenge in pure Python: the tests' agent, and the agent's CPU
fallback when no GPU library (torch, cupy) is importable. O(n³) in Python: keep n small (128 takes
~0.7 s here); the agent's GPU path computes the same numbers with the recipe in
:mod:`~jupyter_gpumarket.core.challenge`."""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence

from jupyter_gpumarket.core.challenge import (
    _SCALE,
    Commit,
    MatmulSpec,
    Reveal,
    Sample,
    _a_row,
    _b_col,
    encode_f32,
    matrix_keys,
    round_digest,
    round_signs,
)

__all__ = ["reference_answer", "reference_product", "reveal_for", "row_sums"]


def reference_product(spec: MatmulSpec, round_index: int) -> list[array[float]]:
    """``C_r`` as float32 rows, computed exactly then rounded (pure Python: O(n³), small n only)."""
    keys = matrix_keys(spec)
    signs = round_signs(spec, round_index)
    cols = [_b_col(spec, keys, j) for j in range(spec.n)]
    out = []
    for i in range(spec.n):
        a = [s * x for s, x in zip(signs, _a_row(spec, keys, i), strict=True)]
        out.append(
            array("f", (sum(x * y for x, y in zip(a, c, strict=True)) * _SCALE**2 for c in cols))
        )
    return out


def row_sums(product: Sequence[array[float]]) -> bytes:
    # float32 sum, as a device would compute it: round after every addition.
    sums = []
    for row in product:
        acc = array("f", [0.0])
        for v in row:
            acc[0] = acc[0] + v * v
        sums.append(acc[0])
    return encode_f32(sums)


def reference_answer(
    spec: MatmulSpec,
) -> tuple[Commit, dict[int, list[array[float]]], dict[int, bytes]]:
    """An honest agent's work: the commit, every round's product and every round's row sums."""
    products = {r: reference_product(spec, r) for r in range(spec.rounds)}
    sums = {r: row_sums(p) for r, p in products.items()}
    return Commit(tuple(round_digest(spec, r, sums[r]) for r in range(spec.rounds))), products, sums


def reveal_for(
    sample: Sample, products: Mapping[int, Sequence[array[float]]], sums: Mapping[int, bytes]
) -> Reveal:
    """What an honest agent sends for ``sample`` given its products and row sums."""
    return Reveal(
        {r: sums[r] for r in sample.rounds},
        {(r, i): encode_f32(products[r][i]) for r, i in sample.rows},
    )
