"""The gpumarket server API (docs/server-api.md) mocked at the browser's one transport seam
(Playwright's page.route and route_web_socket), for the labextension's UI tests: the rest of
JupyterLab (kernels, sessions, kernelspecs) is a real `jupyter lab`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import Page, Route, WebSocketRoute

TOKEN = {"symbol": "TUSD", "decimals": 6}


def offer(oid: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": oid,
        "provider": "0x" + "11" * 20,
        "endpoint": "wss://10.0.0.2:8443",
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "gpu_class": "H100",
        "gpu_count": 1,
        "vram_mib": 81920,
        "price_per_hour": 1_840_000,
        "region": "eu-west",
        "reachable": True,
        "latency_ms": 21.0,
        "free_kernels": 2,
        "verification": "challenged",
        "labels": [],
        "reputation": 0.93,
        "tflops": 512.0,
        "usable": True,
        "position": 1,
        "reason": "seeded challenge passed: 512 TFLOPS",
        "simulated": False,
        "sandboxed": True,
    }
    base.update(extra)
    return base


OFFERS = [
    offer("h100-eu"),
    offer(
        "4090-us",
        gpu_model="NVIDIA GeForce RTX 4090",
        gpu_class="RTX 4090",
        vram_mib=24564,
        price_per_hour=400_000,
        region="us-east",
        verification="self-reported",
        tflops=150.0,
        position=2,
        reason="self-reported only",
    ),
    offer(
        "h100-gone",
        usable=False,
        reachable=False,
        price_per_hour=1_500_000,
        position=None,
        # chain data is a stranger's text: it must show as text, never as markup
        gpu_model='<img src=x onerror="window.__pwned=1">',
        gpu_class=None,
        reason='unreachable: probe timed out after 3 s <img src=x onerror="window.__pwned=2">',
    ),
]

QUOTE = {
    "offer_id": "h100-eu",
    "price_per_hour": 1_840_000,
    "deposit": 5_000_000,
    "budget": 10_000_000,
    "seconds_covered": 9782,
    "token": TOKEN,
    "text": "1.84 TUSD/h · deposit 5.00 ≈ 2 h 43 min · budget cap 10.00",
}

WALLET = {
    "address": "0x" + "ab" * 20,
    "network": "devnet",
    "unlocked": False,
    "unlock_expires_in_s": None,
    "balances": {"token": 250_000_000, "native": 10**18},
    "token": TOKEN,
}


@dataclass
class GpuMarketMock:
    """Answers the gpumarket routes; records what the page asked; pushes events."""

    mode: str = "ok"  # "ok" | "missing" (no server extension) | "chain_down"
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    sockets: list[WebSocketRoute] = field(default_factory=list)
    wallet: dict[str, Any] = field(default_factory=lambda: dict(WALLET))

    def install(self, page: Page) -> None:
        page.route("**/gpumarket/**", self._route)
        page.route_web_socket("**/gpumarket/api/events*", self._socket)

    def _socket(self, ws: WebSocketRoute) -> None:
        if self.mode != "ok":
            ws.close(code=1011, reason="no events")
            return
        self.sockets.append(ws)

    def push(self, event: dict[str, Any]) -> None:
        event.setdefault("t", time.time())
        for ws in self.sockets:
            ws.send(json.dumps(event))

    def asked(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.requests if m == method and p == path]

    def _route(self, route: Route) -> None:
        req = route.request
        url = urlparse(req.url)
        path = url.path.split("/gpumarket/", 1)[1]
        query = {k: v[0] for k, v in parse_qs(url.query).items() if k != "token"}
        body = None
        if req.post_data:
            try:
                body = json.loads(req.post_data)
            except ValueError:
                body = req.post_data
        self.requests.append((req.method, path, body if body is not None else query))
        if self.mode == "missing":
            route.fulfill(
                status=404,
                content_type="text/html",
                body="<html><title>404: Not Found</title><body>404: Not Found</body></html>",
            )
            return
        status, reply = self._answer(req.method, path, query, body)
        route.fulfill(status=status, content_type="application/json", body=json.dumps(reply))

    def _answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "health":
            return 200, {"version": "0.1.0", "kernels": 1}
        api = path.removeprefix("api/")
        down = {
            "message": "chain unreachable at http://127.0.0.1:8545: connection refused; "
            "start the devnet (`gpumarket devnet`) or fix the network profile"
        }
        if self.mode == "chain_down" and api in ("offers", "wallet", "quote"):
            return 502, down
        if api == "offers" and method == "GET":
            return 200, {"offers": OFFERS, "token": TOKEN}
        if api == "quote":
            return 200, {**QUOTE, "offer_id": query.get("offer", "h100-eu")}
        if api == "selection" and method == "POST":
            return 200, {k: v for k, v in body.items() if k != "path"}
        if api == "launches" and method == "GET":
            return 200, {"launches": []}
        if api.startswith("launches/") and api.endswith("/confirm"):
            return 200, launch(api.split("/")[1], "opening_channel")
        if api.startswith("launches/") and api.endswith("/cancel"):
            kernel_id = api.split("/")[1]
            return 200, launch(
                kernel_id,
                "ended",
                reason="cancelled",
                message="cancelled before paying: nothing charged",
            )
        if api == "wallet":
            return 200, self.wallet
        if api == "wallet/unlock":
            if (body or {}).get("password") != "s3cret":
                return 403, {"message": "wrong password for the keystore: try again"}
            self.wallet = {**self.wallet, "unlocked": True, "unlock_expires_in_s": 3600}
            return 200, self.wallet
        if api.startswith("leases/") and method == "DELETE":
            return 200, {
                "lease_id": api.split("/")[1],
                "status": "settled",
                "charged": 410_000,
                "refund": 4_590_000,
                "txs": ["0x" + "cd" * 32],
            }
        if api == "config":
            return 200, {
                "budget_cap": None,
                "auto_topup": False,
                "network": "devnet",
                "policy": "cheapest",
                "verified_only": False,
                "cull_idle_timeout_s": 1800,
            }
        return 404, {"message": f"no route {path} in the mock"}


CANCELLABLE = {
    "choosing",
    "confirming",
    "opening_channel",
    "connecting",
    "syncing_files",
    "starting_kernel",
}
LABELS = {
    "choosing": "choosing an offer",
    "confirming": "waiting for your confirmation",
    "opening_channel": "opening channel (wallet signs)",
    "connecting": "connecting",
    "syncing_files": "syncing files",
    "starting_kernel": "starting kernel",
    "ready": "ready",
    "busy": "busy",
    "reconnecting": "reconnecting (attempt N)",
    "low_funds": "low funds",
    "lost": "lost",
    "ended": "ended",
    "failed": "failed at STEP",
}


def launch(kernel_id: str, state: str, **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "type": "launch",
        "kernel_id": kernel_id,
        "t": time.time(),
        "state": state,
        "label": LABELS[state],
        "step": None,
        "attempt": None,
        "elapsed_s": 3.0,
        "state_elapsed_s": 0.0,
        "cancellable": state in CANCELLABLE,
        "notebook": "gpu.ipynb",
        "offer_id": "h100-eu",
        "lease_id": "7",
        "message": None,
        "reason": None,
    }
    ev.update(extra)
    return ev


def spend(kernel_id: str, **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "type": "spend",
        "kernel_id": kernel_id,
        "t": time.time(),
        "lease_id": "7",
        "rate_per_hour": 1_840_000,
        "spent": 370_000,
        "deposit": 5_000_000,
        "deposit_left": 4_630_000,
        "budget": 10_000_000,
        "seconds_left": 9690,
        "vouchers": 4,
        "token": TOKEN,
    }
    ev.update(extra)
    return ev
