"""The challenge's messages as JSON objects, and their parsing from a hostile peer.

.. code-block:: text

    renter -> agent  setup   spec.setup_json()       {"seed", "n", "rounds", "precision"}
    renter -> agent  go      {"salt": hex}           agent: MatmulSpec.from_json({**setup, **go})
    agent -> renter  commit  commit_to_json(commit)  {"round_digests": [hex, ...]}
    renter -> agent  sample  sample_to_json(sample)  {"rows": [[round, row], ...], "cols": [...]}
    agent -> renter  reveal  reveal_to_json(reveal)  {"row_sums": {"r": b64}, "rows": [[r, i, b64]]}

Every parser knows the spec (and the sample) it answers, so it checks counts and lengths before
decoding anything: a reveal's base64 strings must have exactly the length ``4 n`` bytes encode
to, and the whole reply is bounded by :func:`~jupyter_gpumarket.core.challenge.max_reveal_bytes`.
The I/O shell still caps the raw message size before ``json.loads``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from jupyter_gpumarket.core.challenge import Commit, MatmulSpec, Reveal, Sample
from jupyter_gpumarket.exceptions import ProtocolError

__all__ = [
    "MAX_SAMPLE_ROWS",
    "commit_from_json",
    "commit_to_json",
    "reveal_from_json",
    "reveal_to_json",
    "sample_from_json",
    "sample_to_json",
]

MAX_SAMPLE_ROWS = 64
MAX_SAMPLE_COLS = 256
_HEX64 = re.compile(r"[0-9a-f]{64}")


def commit_to_json(commit: Commit) -> dict[str, Any]:
    return {"round_digests": [d.hex() for d in commit.round_digests]}


def commit_from_json(data: Any, spec: MatmulSpec) -> Commit:
    """The agent's commit for ``spec``: exactly ``spec.rounds`` 32-byte hex digests."""
    digests = data.get("round_digests") if isinstance(data, dict) else None
    if not isinstance(digests, list) or len(digests) != spec.rounds:
        raise ProtocolError(f"a commit must list {spec.rounds} round digests")
    if not all(isinstance(d, str) and _HEX64.fullmatch(d) for d in digests):
        raise ProtocolError("round digests must be 64 lowercase hex digits")
    return Commit(tuple(bytes.fromhex(d) for d in digests))


def sample_to_json(sample: Sample) -> dict[str, Any]:
    return {"rows": [list(rc) for rc in sample.rows], "cols": list(sample.cols)}


def _index(value: Any, bound: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < bound:
        raise ProtocolError(f"{what} must be an integer in [0, {bound}), not {value!r}")
    return value


def sample_from_json(data: Any, spec: MatmulSpec) -> Sample:
    """The renter's sample, as the agent parses it: bounded, distinct, inside the spec."""
    rows = data.get("rows") if isinstance(data, dict) else None
    cols = data.get("cols") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_SAMPLE_ROWS:
        raise ProtocolError(f"a sample asks for 1 to {MAX_SAMPLE_ROWS} rows")
    if not isinstance(cols, list) or len(cols) > MAX_SAMPLE_COLS:
        raise ProtocolError(f"a sample names at most {MAX_SAMPLE_COLS} columns")
    pairs = []
    for item in rows:
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError("each sampled row is [round, row]")
        pairs.append((_index(item[0], spec.rounds, "round"), _index(item[1], spec.n, "row")))
    if len(set(pairs)) != len(pairs):
        raise ProtocolError("a sample names a row twice")
    return Sample(tuple(pairs), tuple(_index(c, spec.n, "column") for c in cols))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def reveal_to_json(reveal: Reveal) -> dict[str, Any]:
    return {
        "row_sums": {str(r): _b64(v) for r, v in reveal.row_sums.items()},
        "rows": [[r, i, _b64(v)] for (r, i), v in reveal.rows.items()],
    }


def _decode(text: Any, n: int, what: str) -> bytes:
    want = 4 * ((4 * n + 2) // 3)  # base64 length of 4n bytes, with padding
    if not isinstance(text, str) or len(text) != want:
        raise ProtocolError(f"{what} must be {want} characters of base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{what} is not valid base64") from None


def reveal_from_json(data: Any, spec: MatmulSpec, sample: Sample) -> Reveal:
    """The agent's reveal, as the renter parses it: exactly the sampled rounds and rows, each
    exactly ``4 n`` bytes (lengths checked before decoding)."""
    sums = data.get("row_sums") if isinstance(data, dict) else None
    rows = data.get("rows") if isinstance(data, dict) else None
    want_rounds = {str(r) for r in sample.rounds}
    if not isinstance(sums, dict) or set(sums) != want_rounds:
        raise ProtocolError("the reveal's row sums must be those of the sampled rounds")
    if not isinstance(rows, list) or len(rows) != len(sample.rows):
        raise ProtocolError(f"the reveal must hold the {len(sample.rows)} sampled rows")
    out_rows: dict[tuple[int, int], bytes] = {}
    wanted = set(sample.rows)
    for item in rows:
        if not isinstance(item, list) or len(item) != 3:
            raise ProtocolError("each revealed row is [round, row, base64]")
        key = (_index(item[0], spec.rounds, "round"), _index(item[1], spec.n, "row"))
        if key not in wanted or key in out_rows:
            raise ProtocolError(f"revealed row {key!r} was not asked for (or came twice)")
        out_rows[key] = _decode(item[2], spec.n, f"row {key!r}")
    out_sums = {int(r): _decode(v, spec.n, f"row sums of round {r}") for r, v in sums.items()}
    return Reveal(out_sums, out_rows)
