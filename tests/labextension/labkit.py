"""Helpers of the labextension's UI tests: notebooks and sessions through the real server."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jupyterproc import JupyterServer


def new_notebook(lab: JupyterServer, name: str) -> str:
    lab.request(
        "PUT",
        f"/api/contents/{name}",
        {
            "type": "notebook",
            "format": "json",
            "content": {
                "cells": [],
                "metadata": {
                    "kernelspec": {
                        "name": "python3",
                        "display_name": "Python 3 (ipykernel)",
                        "language": "python",
                    }
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            },
        },
    )
    return name


def kernel_of(lab: JupyterServer, path: str) -> dict[str, Any] | None:
    for s in lab.request("GET", "/api/sessions"):
        if s["path"] == path:
            return s["kernel"]
    return None


PANEL = "#jupyter-gpumarket-panel"


def wait_for(page: Any, check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``check``, letting Playwright dispatch the page's routes meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(200)


@dataclass
class Session:
    """One browser page on JupyterLab with a notebook open and the GPU Market panel shown;
    ``errors``: uncaught exceptions and the extension's console errors (none expected)."""

    page: Any
    errors: list[str]
    mock: Any = None


def open_page(
    browser: Any, lab: JupyterServer, notebook: str, install: Callable[[Any], None] | None = None
) -> Session:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    if install is not None:
        install(page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))

    def on_console(msg: Any) -> None:
        text = msg.text.lower()
        ours = "gpumarket" in text or "gpu market" in text
        if msg.type == "error" and ours and "failed to load resource" not in text:
            errors.append(f"console: {msg.text}")

    page.on("console", on_console)
    new_notebook(lab, notebook)
    page.goto(f"{lab.url}/lab/tree/{notebook}?reset&token={lab.token}")
    wait_for(page, lambda: kernel_of(lab, notebook), f"{notebook}'s first kernel")
    page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    expect(page.locator(PANEL)).to_be_visible()
    return Session(page, errors)
