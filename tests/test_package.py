"""The installed package: entry points, kernelspec, server extension, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

from jupyter_client.kernelspec import KernelSpecManager

import jupyter_gpumarket
from jupyter_gpumarket import exceptions


def test_kernelspec_is_installed_and_uses_the_provisioner() -> None:
    spec = KernelSpecManager().get_kernel_spec("gpumarket")
    assert spec.display_name == "Python 3 (GPU Market)"
    assert spec.metadata["kernel_provisioner"]["provisioner_name"] == "gpumarket-provisioner"


def test_provisioner_entry_point_is_registered() -> None:
    eps = entry_points(group="jupyter_client.kernel_provisioners")
    names = {ep.name: ep.value for ep in eps}
    assert names["gpumarket-provisioner"] == "jupyter_gpumarket.provisioning:GpuMarketProvisioner"


def test_labextension_path_points_at_built_assets() -> None:
    (path,) = jupyter_gpumarket._jupyter_labextension_paths()
    pkg = json.loads(
        (
            __import__("pathlib").Path(jupyter_gpumarket.__file__).parent
            / path["src"]
            / "package.json"
        ).read_text()
    )
    assert pkg["name"] == path["dest"] == "jupyter-gpumarket"


def test_every_error_is_a_gpumarket_error_and_a_stdlib_error() -> None:
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, exceptions.GpuMarketError)
        if cls is not exceptions.GpuMarketError:
            assert any(
                issubclass(cls, std) and not issubclass(std, exceptions.GpuMarketError)
                for std in (ValueError, RuntimeError, ConnectionError, PermissionError)
            ), name


def test_cli_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_gpumarket.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "gpumarket" in out.stdout


def test_dev_mode_needs_no_ethereum_stack() -> None:
    """A dev provider and a dev kernel import no web3/eth-* (GPU hosts may lack them)."""
    code = (
        "import sys\n"
        "for m in ('eth_abi', 'eth_utils', 'eth_account', 'web3', 'vyper'): sys.modules[m] = None\n"
        "import jupyter_gpumarket.agent.server, jupyter_gpumarket.provisioning\n"
        "import jupyter_gpumarket.cli.provider, jupyter_gpumarket.cli\n"
        "jupyter_gpumarket.cli.build_parser()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
