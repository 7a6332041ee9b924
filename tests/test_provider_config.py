"""`gpumarket provider serve --config FILE`: TOML settings under the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_gpumarket.cli import build_parser
from jupyter_gpumarket.cli.provider_config import parse_with_config
from jupyter_gpumarket.exceptions import ConfigError


def _args(tmp_path: Path, toml: str, *flags: str):
    path = tmp_path / "provider.toml"
    path.write_text(toml)
    return parse_with_config(build_parser(), ["provider", "serve", "--config", str(path), *flags])


def test_the_file_fills_what_no_flag_gave(tmp_path: Path):
    args = _args(
        tmp_path,
        '[provider]\nprice-per-hour = 1800000\nregion = "eu"\nwallet = "~/p.json"\n'
        'gpus = "0"\nrelay_fee = 5\nunsafe-no-sandbox = true\n',
        "--region",
        "us",
    )
    assert args.price_per_hour == 1_800_000
    assert args.region == "us"  # the flag wins
    assert args.wallet == Path("~/p.json")
    assert (args.gpus, args.relay_fee, args.unsafe_no_sandbox) == ("0", 5, True)


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ("price = 1", "unknown setting 'price'"),
        ('price-per-hour = "lots"', "not valid"),
        ("dev = 1", "true or false"),
        ("region = [1]", "single value"),
        ("region = ", "not valid TOML"),
        ('sandbox = "maybe"', "one of"),
    ],
)
def test_bad_settings_name_the_line(tmp_path: Path, toml: str, match: str):
    with pytest.raises(ConfigError, match=match):
        _args(tmp_path, toml)


def test_a_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        parse_with_config(build_parser(), ["provider", "serve", "--config", str(tmp_path / "no")])


def test_a_flag_given_with_its_default_value_still_wins(tmp_path: Path):
    args = _args(
        tmp_path,
        'max-kernels = 2\nsandbox = "off"\nclient-grace = 30\n',
        "--max-kernels",
        "4",  # the flag's default
        "--sandbox",
        "auto",  # the flag's default
    )
    assert args.max_kernels == 4
    assert args.sandbox == "auto"
    assert args.client_grace == 30  # not on the command line: the file's


def test_other_commands_ignore_config_handling(tmp_path: Path):
    args = parse_with_config(build_parser(), ["leases", "--json"])
    assert not hasattr(args, "serve_parser")
