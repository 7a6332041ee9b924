"""The one generator of jupyter_gpumarket/chain/artifacts/*.json (ABI + bytecode).

Usage: python scripts/compile_contracts.py   (then commit the artifacts)
"""

from __future__ import annotations

from jupyter_gpumarket.chain.artifact_loader import ARTIFACTS_DIR
from jupyter_gpumarket.chain.compile import compile_all, dumps


def main() -> None:
    for name, artifact in compile_all().items():
        path = ARTIFACTS_DIR / f"{name}.json"
        path.write_text(dumps(artifact))
        print(f"wrote {path} ({(len(artifact['bytecode']) - 2) // 2} bytes of bytecode)")


if __name__ == "__main__":
    main()
