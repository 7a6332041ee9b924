"""Tests install nothing at run time (scripts/setup.sh installs bubblewrap, nftables, the slot
users, anvil and ethers): no test runs a package manager or the project's anvil installer."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
_RUNNERS = {
    "run",
    "Popen",
    "call",
    "check_call",
    "check_output",
    "system",
    "create_subprocess_exec",
}
_INSTALLERS = ("apt-get", "apt ", "npm", "yarn", "pip", "useradd", "provider setup")


def _words(node: ast.AST) -> str:
    """The strings and variable names in a command (``[npm, "install", ...]`` counts)."""
    words = []
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            words.append(n.value)
        elif isinstance(n, ast.Name):
            words.append(n.id)
    return " ".join(words)


def _installs(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        if name == "install_anvil":
            found.append(f"{path.name}:{node.lineno} install_anvil()")
        elif name in _RUNNERS and node.args:
            command = _words(node.args[0])
            hits = [w for w in _INSTALLERS if w in command]
            if hits and ("install" in command or "setup" in command):
                found.append(f"{path.name}:{node.lineno} {command[:80]}")
    return found


def test_no_test_installs_anything() -> None:
    found = [hit for path in sorted(TESTS.rglob("*.py")) for hit in _installs(path)]
    assert not found, f"tests that install at run time (move it to scripts/setup.sh): {found}"


def test_the_check_finds_an_install(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import subprocess\n"
        "subprocess.run('apt-get update && apt-get install -y bubblewrap', shell=True)\n"
        "subprocess.run([npm, 'install', '--prefix', root])\n"
        "anvil.install_anvil()\n"
    )
    assert len(_installs(bad)) == 3
