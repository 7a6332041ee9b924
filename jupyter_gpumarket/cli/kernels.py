"""`gpumarket kernels list | attach | forget` and `gpumarket files pull`."""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from typing import Any

from jupyter_gpumarket.core import safejson
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError
from jupyter_gpumarket.procs import pid_alive

_MAX_REPLY = 16 * 1024 * 1024  # the server's pull report (paths and messages)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    kernels = sub.add_parser("kernels", help="remote kernels known on this machine")
    ksub = kernels.add_subparsers(dest="kernels_command", metavar="COMMAND", required=True)
    ls = ksub.add_parser("list", help="list remote kernels (running or left by a stopped server)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    attach = ksub.add_parser(
        "attach", help="connection file for `jupyter console --existing` on a remote kernel"
    )
    attach.add_argument("kernel_id")
    attach.set_defaults(func=_attach)
    forget = ksub.add_parser("forget", help="drop the local record of a remote kernel")
    forget.add_argument("kernel_id")
    forget.set_defaults(func=_forget)

    files = sub.add_parser("files", help="files of a remote kernel")
    fsub = files.add_subparsers(dest="files_command", metavar="COMMAND", required=True)
    pull = fsub.add_parser("pull", help="bring files the kernel wrote back into the notebook dir")
    pull.add_argument("kernel_id")
    pull.add_argument("--server", help="Jupyter server URL (default: the running one)")
    pull.add_argument("--token", help="its token (default: from the server's runtime file)")
    pull.set_defaults(func=_pull)


def _list(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.provisioning import records

    rows = [r.public() for r in records.load_all()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no remote kernels")
        return 0
    for r in rows:
        age = time.time() - r["created"]
        print(
            f"{r['kernel_id']}  {r['provider_url']}  lease {r['lease'][:12]}  "
            f"up {age / 60:.0f} min  {r['cwd'] or ''}"
        )
    return 0


def _attach(args: argparse.Namespace) -> int:
    """Print the running server's connection file, or serve a shim here until Ctrl-C."""
    import os

    from jupyter_gpumarket.provisioning import records

    record = records.load(args.kernel_id)
    if record is None:
        raise ConfigError(f"no remote kernel {args.kernel_id}: see `gpumarket kernels list`")
    if (
        record.connection_file
        and os.path.exists(record.connection_file)
        and pid_alive(record.server_pid)
    ):
        print(record.connection_file)
        print(f"jupyter console --existing {record.connection_file}")
        return 0
    from jupyter_gpumarket.provisioning.attach import serve_attached

    serve_attached(record)
    return 0


def _forget(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.provisioning import records

    print("forgotten" if records.forget(args.kernel_id) else "no such record")
    return 0


def _server(args: argparse.Namespace) -> tuple[str, str]:
    if args.server:
        return args.server.rstrip("/"), args.token or ""
    from jupyter_server.serverapp import list_running_servers

    for info in list_running_servers():
        return info["url"].rstrip("/"), args.token or info.get("token", "")
    raise ConfigError("no running Jupyter server found: pass --server URL --token TOKEN")


def _pull(args: argparse.Namespace) -> int:
    url, token = _server(args)
    req = urllib.request.Request(
        f"{url}/gpumarket/kernels/{args.kernel_id}/pull",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"token {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            result = safejson.loads(resp.read(_MAX_REPLY + 1), "pull reply", max_bytes=_MAX_REPLY)
    except urllib.error.HTTPError as exc:
        raise GpuMarketError(
            f"pull failed: {exc.code} {exc.read().decode(errors='replace')}"
        ) from None
    except urllib.error.URLError as exc:
        raise GpuMarketError(f"cannot reach the Jupyter server at {url}: {exc.reason}") from None
    if not isinstance(result, dict):
        raise GpuMarketError(f"{url} answered the pull with no report: is it a Jupyter server?")
    for path in result.get("pulled", []):
        print(f"pulled {path}")
    for message in result.get("conflicts", []):
        print(message)
    if not result.get("pulled"):
        print("nothing new to pull")
    return 0
