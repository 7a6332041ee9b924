"""The launch hub and the provisioner's side of it, in process: who waits for a confirmation,
the stored-selection seam, cancel and confirm on a tracker, notices as warnings, the events
listeners see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_gpumarket.core.launch_state import LaunchEventType
from jupyter_gpumarket.core.quote import make_quote
from jupyter_gpumarket.exceptions import (
    ConfigError,
    LaunchCancelled,
    LaunchStateConflict,
)
from jupyter_gpumarket.provisioning import launch_flow
from jupyter_gpumarket.provisioning.launch_events import (
    hub,
    set_selection_lookup,
    stored_selection,
)
from jupyter_gpumarket.provisioning.provisioner import GpuMarketProvisioner

E = LaunchEventType


@pytest.fixture
def seen() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    unsubscribe = hub().subscribe(events.append)
    yield events
    unsubscribe()


def _prov(kernel_id: str, **env: str) -> GpuMarketProvisioner:
    prov = GpuMarketProvisioner(kernel_id=kernel_id, kernel_spec=None)
    prov._launch_env = {"JPY_SESSION_NAME": "work/nb.ipynb", **env}
    return prov


@pytest.mark.parametrize(
    ("env", "trait", "ui", "waits"),
    [
        ({"GPUMARKET_CONFIRM": "1"}, True, False, True),  # forced, even with nobody to ask
        ({"GPUMARKET_CONFIRM": "0"}, True, True, False),  # never, even with a UI
        ({}, True, True, True),  # a UI watches: it asks
        ({}, True, False, False),  # nbclient / CI: nobody could confirm
        ({}, False, True, False),  # the trait turns it off
    ],
)
def test_who_waits_for_a_confirmation(
    env: dict[str, str], trait: bool, ui: bool, waits: bool
) -> None:
    prov = _prov("k-confirm", **env)
    prov.confirm = trait
    unsubscribe = hub().subscribe(lambda event: None) if ui else (lambda: None)
    try:
        assert launch_flow.confirmation_required(prov) is waits
    finally:
        unsubscribe()


def test_a_bad_confirm_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="GPUMARKET_CONFIRM"):
        launch_flow.confirmation_required(_prov("k-bad", GPUMARKET_CONFIRM="maybe"))


def test_the_stored_selection_seam_falls_back_to_the_default() -> None:
    store = {None: {"offer": "3", "confirmed_quote": None}, "a.ipynb": {"offer": "1"}}
    assert stored_selection("a.ipynb") is None  # nothing plugged in
    set_selection_lookup(store.get)
    try:
        assert stored_selection("a.ipynb") == {"offer": "1"}
        assert stored_selection("other.ipynb") == store[None]

        def broken(path: str | None) -> dict[str, Any] | None:
            raise OSError("disk gone")

        set_selection_lookup(broken)
        assert stored_selection("a.ipynb") is None  # no confirmed quote, not a failed launch
    finally:
        set_selection_lookup(None)


def test_a_launch_publishes_each_step_and_cancel_stops_at_the_next(
    seen: list[dict[str, Any]],
) -> None:
    prov = _prov("k-steps")
    launch_flow.begin(prov)
    launch_flow.step(prov, E.CONNECT)
    t = hub().get("k-steps")
    assert t is not None
    t.cancel()  # no task to interrupt here: the next step refuses
    with pytest.raises(LaunchCancelled):
        launch_flow.step(prov, E.SYNC_FILES)
    out = launch_flow.failed(prov, LaunchCancelled("x"))
    assert isinstance(out, LaunchCancelled)
    states = [e["state"] for e in seen if e["kernel_id"] == "k-steps"]
    assert states == ["choosing", "connecting", "ended"]
    assert seen[-1]["reason"] == "cancelled"
    assert seen[-1]["notebook"] == "work/nb.ipynb"
    with pytest.raises(LaunchStateConflict):
        t.cancel()


def test_a_failure_names_its_step_and_ready_is_not_cancellable(
    seen: list[dict[str, Any]],
) -> None:
    prov = _prov("k-fail")
    launch_flow.begin(prov)
    launch_flow.step(prov, E.CONNECT)
    launch_flow.failed(prov, ConnectionRefusedError("refused"))
    failed = seen[-1]
    assert (failed["state"], failed["step"], failed["label"]) == (
        "failed",
        "connecting",
        "failed at connecting",
    )
    prov2 = _prov("k-live")
    launch_flow.begin(prov2)
    launch_flow.ready(prov2)
    t = hub().get("k-live")
    assert t is not None
    with pytest.raises(LaunchStateConflict, match="stop the kernel instead"):
        t.cancel()
    launch_flow.notice(prov2, "[gpumarket] provider: voucher late by 12 s")
    assert seen[-2]["type"] == "warning"
    assert seen[-2]["code"] == "payment"
    assert (seen[-1]["state"], seen[-1]["message"]) == (
        "low_funds",
        "provider: voucher late by 12 s",
    )
    launch_flow.ended(prov2)
    assert (seen[-1]["state"], seen[-1]["reason"]) == ("ended", "stopped")


def test_confirm_needs_a_quote_that_covers_the_launch() -> None:
    async def main() -> None:
        prov = _prov("k-quote")
        launch_flow.begin(prov)
        t = hub().get("k-quote")
        assert t is not None
        quote = make_quote(5, 1_000_000, 10_000_000, 1.0)
        with pytest.raises(LaunchStateConflict):
            t.confirm(quote)  # not waiting yet
        waiting = asyncio.ensure_future(t.wait_confirmed(quote, timeout=30))
        await asyncio.sleep(0)
        with pytest.raises(ConfigError, match="does not cover"):
            t.confirm(make_quote(5, 999_999, 10_000_000, 1.0))
        t.confirm(quote)
        await asyncio.wait_for(waiting, 10)
        assert t.confirmed == quote
        prov2 = _prov("k-timeout")
        launch_flow.begin(prov2)
        t2 = hub().get("k-timeout")
        assert t2 is not None
        with pytest.raises(ConfigError, match="nobody confirmed"):
            await t2.wait_confirmed(quote, timeout=0.05)

    asyncio.run(main())


def test_the_snapshot_has_every_launch() -> None:
    launch_flow.begin(_prov("k-snap"))
    assert "k-snap" in {e["kernel_id"] for e in hub().snapshot() if e["type"] == "launch"}
    assert "k-snap" in {e["kernel_id"] for e in hub().launches()}
