"""Chain fixtures: one anvil per session on a random port, contracts deployed once,
and evm_snapshot / evm_revert around every test that uses the chain."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jupyter_gpumarket.chain.anvil import AnvilProcess, find_anvil, start_anvil
from jupyter_gpumarket.chain.client import Contracts, Deployment, connect
from jupyter_gpumarket.chain.deploy import deploy_all
from jupyter_gpumarket.chain.dev_accounts import DEV_PRIVATE_KEYS, dev_account

CLOSE_DELAY = 600


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilProcess]:
    # scripts/setup.sh installs anvil (npm @foundry-rs/anvil into ~/.gpumarket/tools)
    if find_anvil() is None:
        pytest.skip("anvil is not installed: scripts/setup.sh installs it (needs npm)")
    with start_anvil(install=False) as process:
        yield process


@pytest.fixture(scope="session")
def w3_session(anvil: AnvilProcess):
    return connect(anvil.rpc_url)


@pytest.fixture(scope="session")
def accounts():
    """The ten dev accounts: 0 deployer, 1 renter, 2 provider, 3 relayer, 4 admin, 5 student."""
    return [dev_account(i) for i in range(len(DEV_PRIVATE_KEYS))]


@pytest.fixture(scope="session")
def deployment(w3_session, accounts) -> Deployment:
    return deploy_all(w3_session, accounts[0], CLOSE_DELAY, fund=[a.address for a in accounts[1:5]])


@pytest.fixture
def w3(w3_session, deployment) -> Iterator:
    snapshot = w3_session.provider.make_request("evm_snapshot", [])["result"]
    yield w3_session
    w3_session.provider.make_request("evm_revert", [snapshot])


@pytest.fixture
def contracts(w3, deployment) -> Contracts:
    return Contracts.at(w3, deployment.token, deployment.escrow, deployment.registry)


# ------------------------------------------------------------ both backends (anvil, embedded)
# Tests that take ``any_chain`` run once on anvil and once on the embedded py-evm chain (the
# fallback `gpumarket devnet` uses where anvil is missing), each reverted after the test.


@pytest.fixture(scope="session")
def embedded_session(accounts):
    from jupyter_gpumarket.chain.embedded import start_embedded

    with start_embedded() as chain:
        w3 = connect(chain.rpc_url)
        yield w3, deploy_all(w3, accounts[0], CLOSE_DELAY, fund=[a.address for a in accounts[1:5]])


@pytest.fixture(params=["anvil", "embedded"])
def any_chain(request) -> Iterator[Contracts]:
    """The deployment's contracts on anvil, then on the embedded chain."""
    if request.param == "anvil":
        w3, d = request.getfixturevalue("w3_session"), request.getfixturevalue("deployment")
    else:
        w3, d = request.getfixturevalue("embedded_session")
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield Contracts.at(w3, d.token, d.escrow, d.registry)
    w3.provider.make_request("evm_revert", [snapshot])
