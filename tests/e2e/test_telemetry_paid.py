"""A paid lease's telemetry carries its billed seconds and spend, to the renter and the kernel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from jupyter_gpumarket.core.metering import amount_due

from agentproc import environ
from marketproc import PRICE, running_market

pytestmark = pytest.mark.slow


def test_samples_carry_the_bill(tmp_path: Path) -> None:
    out: list[str] = []
    with running_market(tmp_path) as market, environ(market.renter_env):
        km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=120)
        try:
            deadline = time.monotonic() + 60
            while not (h := km.provisioner.telemetry()) or h[-1]["billed_seconds"] < 3:
                assert time.monotonic() < deadline, "no billed seconds in the telemetry"
                time.sleep(0.2)
            reply = kc.execute_interactive(
                "import json\nfrom jupyter_gpumarket.telemetry_view import read_latest\n"
                "print(json.dumps(read_latest()))",
                timeout=60,
                output_hook=lambda msg: out.append(msg["content"].get("text", "")),
            )
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok"
    for sample in h:
        assert sample["spend"] == amount_due(PRICE, sample["billed_seconds"])
    billed = [s["billed_seconds"] for s in h]
    assert billed == sorted(billed)  # the clock only moves forward
    # the link's own notices ("[gpumarket] offer N is UNSANDBOXED ...") share the output stream
    lines = "".join(out).splitlines()
    [line] = [ln for ln in lines if ln.strip() and not ln.startswith("[gpumarket]")]
    inside = json.loads(line)
    assert inside["billed_seconds"] >= 3
    assert inside["spend"] == amount_due(PRICE, inside["billed_seconds"]) > 0
