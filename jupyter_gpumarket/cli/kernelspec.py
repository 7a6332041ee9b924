"""`gpumarket kernelspec add | remove | list`: extra kernelspecs pinned to a selection.

    gpumarket kernelspec add "gpu=H100,verified=1" --name h100 \\
        --display-name "Python 3 (H100, cheapest verified)"

writes an ordinary ``kernel.json`` into the user's Jupyter kernels folder: the static
``gpumarket`` spec's argv and provisioner, with the selection in
``metadata.gpumarket.selection`` (the provisioner reads it before the notebook's stored
selection). The KernelSpecManager is never replaced; ``remove`` deletes only specs this command
wrote (their ``metadata.gpumarket.written_by``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["WRITTEN_BY", "register"]

WRITTEN_BY = "gpumarket kernelspec add"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_STATIC = Path(__file__).resolve().parent.parent / "kernelspec" / "gpumarket" / "kernel.json"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `kernelspec` command group."""
    p = sub.add_parser("kernelspec", help="kernelspecs pinned to an offer or a filter")
    ksub = p.add_subparsers(dest="kernelspec_command", metavar="ACTION", required=True)
    a = ksub.add_parser("add", help="write a kernelspec pinned to an offer id or filter")
    a.add_argument("offer", metavar="FILTER_OR_OFFER", help="offer id, or a GPUMARKET_OFFER filter")
    a.add_argument("--name", required=True, help="kernelspec name: a-z 0-9 . _ - (max 64)")
    a.add_argument("--display-name", help="what Jupyter shows (default: from the filter)")
    a.add_argument("--network", help="network profile name (default: the active one at launch)")
    a.add_argument(
        "--budget",
        type=argtypes.int_in(1, argtypes.UINT256_MAX, "token base units, at least 1"),
        help="most a lease may spend, token base units",
    )
    a.add_argument(
        "--initial-hours",
        type=argtypes.seconds(high=9999, unit="hours"),
        help="hours of deposit paid up front",
    )
    a.add_argument("--replace", action="store_true", help="overwrite a spec this command wrote")
    a.set_defaults(func=add)
    r = ksub.add_parser("remove", help="remove a kernelspec written by `kernelspec add`")
    r.add_argument("name")
    r.set_defaults(func=remove)
    ls = ksub.add_parser("list", help="the gpumarket kernelspecs and what each is pinned to")
    ls.add_argument("--json", action="store_true", help="machine-readable list")
    ls.set_defaults(func=list_specs)


def _kernels_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "kernels"


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name == "gpumarket":
        raise ConfigError(
            f"kernelspec name {name[:80]!r} must be 1 to 64 of a-z 0-9 . _ - (starting with a "
            "letter or digit), and not 'gpumarket' (the static spec)"
        )
    return name


def _ours(spec_dir: Path) -> dict[str, Any] | None:
    """The spec's kernel.json when this command wrote it, else None."""
    try:
        data = json.loads((spec_dir / "kernel.json").read_text())
    except (OSError, ValueError):
        return None
    meta = data.get("metadata") if isinstance(data, dict) else None
    mark = meta.get("gpumarket") if isinstance(meta, dict) else None
    if isinstance(mark, dict) and mark.get("written_by") == WRITTEN_BY:
        return dict(data)
    return None


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The kernel.json of a pinned spec (checked with the server API's selection rules)."""
    from jupyter_gpumarket.core.server_api import parse_selection

    body: dict[str, Any] = {"offer": args.offer}
    if args.network:
        body["network"] = args.network
    if args.budget is not None:
        body["budget"] = args.budget
    if args.initial_hours is not None:
        body["initial_hours"] = args.initial_hours
    _, selection = parse_selection(body)
    spec: dict[str, Any] = json.loads(_STATIC.read_text())
    display = args.display_name or f"Python 3 (GPU Market: {selection['offer']})"
    if not 0 < len(display) <= 128 or not display.isprintable():
        raise ConfigError("--display-name must be 1 to 128 printable characters")
    spec["display_name"] = display
    spec["metadata"]["gpumarket"] = {"written_by": WRITTEN_BY, "selection": selection}
    return spec


def add(args: argparse.Namespace) -> int:
    from jupyter_gpumarket import statefile

    name = _check_name(args.name)
    spec = build_spec(args)
    spec_dir = _kernels_dir() / name
    spec_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        spec_dir.mkdir()
    except FileExistsError:
        if not (args.replace and _ours(spec_dir) is not None):
            raise ConfigError(
                f"a kernelspec {name!r} exists at {spec_dir}; choose another --name"
                + (" (--replace only overwrites specs this command wrote)" if args.replace else "")
            ) from None
    statefile.write_json(spec_dir / "kernel.json", spec, mode=0o644, indent=2)
    print(f"wrote kernelspec {name!r} ({spec['display_name']}) at {spec_dir}")
    return 0


def remove(args: argparse.Namespace) -> int:
    from jupyter_client.kernelspec import KernelSpecManager

    name = _check_name(args.name)
    found = KernelSpecManager().find_kernel_specs().get(name)
    if found is None:
        raise ConfigError(f"no kernelspec {name!r}: `gpumarket kernelspec list` shows them")
    spec_dir = Path(found)
    if _ours(spec_dir) is None:
        raise ConfigError(
            f"kernelspec {name!r} ({spec_dir}) was not written by `gpumarket kernelspec add`; "
            "not removing it (use `jupyter kernelspec remove` for other specs)"
        )
    (spec_dir / "kernel.json").unlink()
    try:
        spec_dir.rmdir()
    except OSError:
        print(f"removed {spec_dir / 'kernel.json'}; other files remain in {spec_dir}")
        return 0
    print(f"removed kernelspec {name!r} ({spec_dir})")
    return 0


def list_specs(args: argparse.Namespace) -> int:
    from jupyter_client.kernelspec import KernelSpecManager

    rows: list[dict[str, Any]] = []
    for name, where in sorted(KernelSpecManager().find_kernel_specs().items()):
        data = _ours(Path(where))
        if data is None and name != "gpumarket":
            continue
        selection = data["metadata"]["gpumarket"]["selection"] if data else None
        rows.append({"name": name, "path": where, "selection": selection})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        pin = row["selection"]["offer"] if row["selection"] else "(the notebook's selection)"
        print(f"{row['name']:<24} {pin}  {row['path']}")
    return 0
