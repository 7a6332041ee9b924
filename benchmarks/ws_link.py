"""The renter link's websocket alone: picows vs websockets client, one websockets server.

    python benchmarks/ws_link.py [--messages 300] [--size 1048576] [--pings 3000]

A websockets server over TLS on loopback (as the agent) in a child process; this process is
the renter: round trip of small binary messages (echoed by the server), and N messages of
SIZE bytes streamed from the server, each client alternately, twice; the client's CPU time
per MB counts only the renter's side. Writes benchmarks/results/ws_link.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ws_link.json"


def serve(cert_dir: str, port_q: Any, size: int) -> None:
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve

    from jupyter_gpumarket.agent.tls import ensure_certificate, server_ssl_context

    cert = ensure_certificate(Path(cert_dir))
    blob = bytes(size)

    async def handler(ws: ServerConnection) -> None:
        async for msg in ws:
            if isinstance(msg, str):  # "stream N": N big messages
                for _ in range(int(msg.split()[1])):
                    await ws.send(blob)
            else:
                await ws.send(msg)

    async def main() -> None:
        async with ws_serve(
            handler, "127.0.0.1", 0, ssl=server_ssl_context(cert), max_size=None, compression=None
        ) as server:
            port_q.put((server.sockets[0].getsockname()[1], cert.fingerprint))
            await asyncio.Future()

    import uvloop

    uvloop.run(main())


async def client(kind: str, url: str, pin: str, args: argparse.Namespace) -> dict[str, float]:
    from jupyter_gpumarket.pinned import connect_pinned
    from jupyter_gpumarket.provisioning import fastws
    from jupyter_gpumarket.provisioning.link_connect import LinkSettings
    from jupyter_gpumarket.wire import CountingClientConnection

    settings = LinkSettings()
    msg = lambda exc: str(exc)  # noqa: E731
    if kind == "picows":
        ws: Any = await fastws.connect_pinned(
            url,
            pin,
            unreachable=msg,
            mismatch=msg,
            open_timeout=10,
            max_size=settings.max_frame_bytes,
        )
    else:
        ws = await connect_pinned(
            url,
            pin,
            unreachable=msg,
            mismatch=msg,
            open_timeout=10,
            max_size=settings.max_frame_bytes,
            compression=None,
            ping_interval=None,
            max_queue=64,
            create_connection=CountingClientConnection,
        )
    small = bytes(64)
    rtts = []
    for _ in range(args.pings):
        t0 = time.perf_counter()
        await ws.send(small)
        await ws.recv()
        rtts.append(time.perf_counter() - t0)
    c0, t0 = time.process_time(), time.perf_counter()
    await ws.send(f"stream {args.messages}")
    for _ in range(args.messages):
        await ws.recv()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await ws.close()
    mb = args.messages * args.size / 2**20
    return {
        "rtt_median_us": statistics.median(rtts) * 1e6,
        "mb_per_s": mb / wall,
        "client_cpu_ms_per_mb": cpu * 1e3 / mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--pings", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        q: Any = multiprocessing.Queue()
        proc = multiprocessing.Process(target=serve, args=(tmp, q, args.size), daemon=True)
        proc.start()
        port, pin = q.get(timeout=30)
        url = f"wss://127.0.0.1:{port}/"
        runs: dict[str, list[dict[str, float]]] = {"websockets": [], "picows": []}
        for _ in range(args.repeats):
            for kind in runs:
                runs[kind].append(uvloop.run(client(kind, url, pin, args)))
        proc.terminate()
    result: dict[str, Any] = {"params": vars(args), "runs": runs}
    best = {
        kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for kind, rs in runs.items()
    }
    result["median"] = best
    result["picows_vs_websockets"] = {
        k: best["picows"][k] / best["websockets"][k] for k in best["picows"]
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"], indent=1))
    print("picows/websockets:", json.dumps(result["picows_vs_websockets"]))


if __name__ == "__main__":
    sys.exit(main())
