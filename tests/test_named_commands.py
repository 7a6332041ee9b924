"""Every `gpumarket …` command that a message, docstring or the README names exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from jupyter_gpumarket.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
_NAMED = re.compile(r"`gpumarket ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _exists(words: list[str]) -> bool:
    commands = _subcommands(build_parser())
    if words[0] not in commands:
        return False
    inner = _subcommands(commands[words[0]])
    # a second word is a subcommand only where the command has subcommands
    return len(words) == 1 or not inner or words[1] in inner


def test_every_named_command_exists() -> None:
    sources = [
        *ROOT.joinpath("jupyter_gpumarket").rglob("*.py"),
        *ROOT.joinpath("notebooks").glob("*.ipynb"),
        ROOT / "README.md",
    ]
    missing = {}
    for path in sources:
        for match in _NAMED.finditer(path.read_text(encoding="utf-8")):
            if not _exists(match.group(1).split()):
                missing.setdefault(match.group(1), path.relative_to(ROOT))
    assert not missing, f"commands named but not built: {missing}"
