"""Helpers of the labextension's UI tests: notebooks and sessions through the real server."""

from __future__ import annotations

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
