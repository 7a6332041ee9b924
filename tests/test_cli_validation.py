"""Every numeric flag of `gpumarket` refuses bad values with argparse's one-line error (exit 2).

The values from the security report run through the real CLI (a subprocess each); the whole
class (every numeric flag x negative, zero, non-finite, too large, not a number) runs through
the same parser in-process; the provider's --config file gets the same checks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_gpumarket.cli import build_parser
from jupyter_gpumarket.cli.provider_config import parse_with_config
from jupyter_gpumarket.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HANG = 120  # seconds: only to detect a CLI that went on to serve instead of refusing

# (argv, the flag the error must name) from the report
REPORTED = [
    (["pool", "create", "1e99"], "amount"),
    (["provider", "serve", "--price-per-hour", "1e80"], "--price-per-hour"),
    (["provider", "serve", "--price-per-hour", "1" + "0" * 80], "--price-per-hour"),
    (["provider", "serve", "--dev", "--port", "99999"], "--port"),
    (["provider", "serve", "--relay-fee", "-1"], "--relay-fee"),
    (["provider", "serve", "--payment-grace", "-10"], "--payment-grace"),
    (["provider", "serve", "--dev", "--max-frame-mb", "0"], "--max-frame-mb"),
    (["provider", "serve", "--dev", "--client-grace", "-1"], "--client-grace"),
    (["devnet", "--port", "99999"], "--port"),
]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def test_reported_values_get_a_one_line_error_from_the_real_cli(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("GPUMARKET_HOME", None)
    procs = [  # all at once: each is a fresh interpreter
        subprocess.Popen(
            [sys.executable, "-m", "jupyter_gpumarket.cli", *argv, *_state(argv, tmp_path, i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for i, (argv, _flag) in enumerate(REPORTED)
    ]
    for proc, (argv, flag) in zip(procs, REPORTED, strict=True):
        try:
            out, err = proc.communicate(timeout=HANG)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"`gpumarket {' '.join(argv)}` did not refuse its value") from None
        assert "Traceback" not in out + err, (argv, err)
        assert proc.returncode == 2, (argv, proc.returncode, err)
        (line,) = _error_lines(err)
        assert f"argument {flag}:" in line, (argv, line)


def _state(argv: list[str], tmp_path: Path, i: int) -> list[str]:
    if argv[:2] == ["provider", "serve"]:
        return ["--state-dir", str(tmp_path / f"state{i}")]
    return []


SERVE = ["provider", "serve", "--dev"]
# every numeric flag of every command, with values it must refuse
NUMERIC_FLAGS = [
    (SERVE, "--port", ["-1", "65536", "99999", "1.5", "0x50", "nan"]),
    (SERVE, "--max-kernels", ["0", "-3", "1e3", "many"]),
    (SERVE, "--gpus-per-kernel", ["0", "-1", "65"]),
    (SERVE, "--client-grace", ["-1", "0", "nan", "inf", "-inf", "1e300", "soon"]),
    (SERVE, "--kernel-memory-mb", ["0", "-512", "1e9", str(2**41)]),
    (SERVE, "--price-per-hour", ["0", "-5", "1e80", "1.5", str(2**88), "NaN"]),
    (SERVE, "--voucher-interval", ["0", "-15", "3601", "2.5"]),
    (SERVE, "--payment-grace", ["-10", "0", "inf", "nan"]),
    (SERVE, "--redeem-every", ["-1", "0", "inf"]),
    (SERVE, "--relay-fee", ["-1", str(2**88 - 1), "1e80", "0.5"]),
    (SERVE, "--max-frame-mb", ["0", "-1", "4097", "1e3"]),
    (SERVE, "--replay-buffer-mb", ["0", "-64"]),
    (SERVE, "--kernel-cpus", ["0", "-1", "nan", "inf", "1e9"]),
    (SERVE, "--kernel-pids", ["0", "-1", str(2**40)]),
    (SERVE, "--kernel-disk-mb", ["0", "-1"]),
    (SERVE, "--kernel-inodes", ["0", "63", "4294967297", "1e6"]),
    (["provider", "stop"], "--timeout", ["-1", "0", "nan"]),
    (["provider", "setup"], "--slots", ["0", "-4", "1e9"]),
    (["demo"], "--port", ["-1", "70000"]),
    (["demo"], "--price-per-hour", ["0", "1e80", str(2**88)]),
    (["devnet"], "--port", ["-1", "99999"]),
    (["devnet"], "--close-delay", ["-1", str(2**32), "1.5"]),
    (["network", "add", "x"], "--chain-id", ["0", "-1", str(2**64)]),
    (["network", "add", "x"], "--close-delay", ["-1", str(2**32)]),
    (["network", "add", "x"], "--token-decimals", ["-1", "78", "300"]),
    (["pool", "grant", "0x1", "0x2", "--cap", "1"], "--days", ["0", "-1", "3651", "nan"]),
    (["pool", "grant", "0x1", "0x2"], "--cap", ["0", "-1", "1e99", "nan", "Infinity", "x"]),
    (["wallet", "fund"], "--amount", ["0", "-5", "1e99", "inf"]),
    (["offers"], "--min-vram", ["-1", "1e9", "nan", str(10**10)]),
    (["offers"], "--max-price", ["-1", "1e80", "x", str(2**256)]),
    (["offers"], "--timeout", ["0", "-1", "nan", "61"]),
    (["offers", "verify", "1"], "--size", ["0", "7", "16385", "1.5", "nan"]),
    (["offers", "verify", "1"], "--timeout", ["0", "-1", "nan", "inf"]),
    (["kernelspec", "add", "7", "--name", "k"], "--budget", ["0", "-1", "1e9", str(2**256)]),
    (["kernelspec", "add", "7", "--name", "k"], "--initial-hours", ["0", "-1", "nan", "1e5"]),
]
POSITIONAL = [
    (["pool", "create"], "amount", ["0", "-1", "1e99", "nan", "lots"]),
    (["pool", "fund", "0x1"], "amount", ["0", "-1", "1e99", "inf"]),
]


def _cases() -> list[tuple[list[str], str]]:
    cases = [([*prefix, flag, v], flag) for prefix, flag, values in NUMERIC_FLAGS for v in values]
    cases += [([*prefix, v], name) for prefix, name, values in POSITIONAL for v in values]
    return cases


@pytest.mark.parametrize(
    ("argv", "flag"), _cases(), ids=lambda x: " ".join(x) if isinstance(x, list) else x
)
def test_every_numeric_flag_refuses_bad_values(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"argument {flag}:" in line


def test_the_test_covers_every_numeric_flag() -> None:
    """A numeric flag added later without a validator (or without a row above) fails here."""
    covered = {(tuple(p[:2]), f) for p, f, _ in NUMERIC_FLAGS}
    parser = build_parser()
    for path, sub in _subparsers(parser, ()):
        for action in sub._actions:
            kind = getattr(action.type, "__module__", None)
            if action.type in (int, float):
                raise AssertionError(
                    f"{' '.join(path)} {action.option_strings}: plain {action.type}"
                )
            if kind == "jupyter_gpumarket.cli.argtypes" and action.option_strings:
                flag = action.option_strings[-1]
                assert (path[:2], flag) in covered, f"no bad values tested for {path} {flag}"


def _subparsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*path, name))


@pytest.mark.parametrize(
    "argv",
    [
        [*SERVE, "--port", "0", "--relay-fee", "0", "--client-grace", "0.5"],
        [*SERVE, "--port", "65535", "--price-per-hour", str(2**88 - 1)],
        [*SERVE, "--relay-fee", str(2**88 - 2), "--kernel-cpus", "1.5", "--max-frame-mb", "2048"],
        ["pool", "create", "12.5"],
        ["pool", "grant", "0x1", "0x2", "--cap", "0.000001", "--days", "0.5"],
        ["devnet", "--port", "0", "--close-delay", "0"],
        ["network", "add", "x", "--chain-id", "8453", "--token-decimals", "0"],
    ],
)
def test_good_values_still_pass(argv: list[str]) -> None:
    build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ("port = 99999", "port = 99999 is not valid.*out of range"),
        ("price-per-hour = 1e80", "not a whole number"),
        ('price-per-hour = "1e80"', "not a whole number"),
        ("relay-fee = -1", "out of range"),
        ("payment-grace = -10", "out of range"),
        ("client-grace = -1", "out of range"),
        ("max-frame-mb = 0", "out of range"),
        ("kernel-cpus = nan", "not valid"),
        ("max-kernels = 1.0", "not a whole number"),
    ],
)
def test_the_config_file_gets_the_same_checks(tmp_path: Path, toml: str, match: str) -> None:
    path = tmp_path / "provider.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=match):
        parse_with_config(build_parser(), ["provider", "serve", "--config", str(path)])


def test_a_bad_config_file_value_is_one_line_from_the_real_cli(tmp_path: Path) -> None:
    path = tmp_path / "provider.toml"
    path.write_text("[provider]\nport = 99999\n")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_gpumarket.cli",
            "provider",
            "serve",
            "--dev",
            "--config",
            str(path),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=HANG,
        env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
    )
    assert "Traceback" not in res.stdout + res.stderr
    assert res.returncode != 0
    (line,) = _error_lines(res.stderr)
    assert "port = 99999" in line
