"""Thin web3 shell: connect, deploy, get contract handles, send signed transactions.

Transactions are signed locally (eth-account) and sent raw, so the same code works against
anvil, the embedded chain and a public RPC. Every web3 failure goes through ``rpc_errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket.chain.artifact_loader import load_artifact
from jupyter_gpumarket.chain.errors import rpc_errors
from jupyter_gpumarket.exceptions import RpcUnavailable, TransactionReverted

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3
    from web3.contract import Contract

__all__ = [
    "Contracts",
    "Deployment",
    "call",
    "connect",
    "contract_at",
    "deploy",
    "send",
    "send_value",
]


@dataclass(frozen=True)
class Deployment:
    """Addresses of one deployment of the project's contracts."""

    token: str
    escrow: str
    registry: str
    close_delay: int

    def __post_init__(self) -> None:
        from eth_utils import is_address, to_checksum_address

        for field in ("token", "escrow", "registry"):
            value = getattr(self, field)
            if not is_address(value):
                raise TransactionReverted(f"deployment {field} is not an address: {value!r}")
            object.__setattr__(self, field, to_checksum_address(value))


@dataclass(frozen=True)
class Contracts:
    """web3 contract handles of one deployment (``token`` may be a real stablecoin)."""

    w3: Web3
    token: Contract
    escrow: Contract
    registry: Contract

    @classmethod
    def at(cls, w3: Web3, token: str, escrow: str, registry: str) -> Contracts:
        return cls(
            w3=w3,
            token=contract_at(w3, "TestUSD", token),
            escrow=contract_at(w3, "Escrow", escrow),
            registry=contract_at(w3, "Registry", registry),
        )

    @classmethod
    def bound(cls, w3: Web3, token: str, escrow: str, registry: str) -> Contracts:
        """``at``, checked: contracts with code and ``escrow.token() == token`` (ConfigError)."""
        from jupyter_gpumarket.chain.binding import check_binding

        contracts = cls.at(w3, token, escrow, registry)
        check_binding(contracts)
        return contracts


def connect(rpc_url: str, timeout: float = 10.0) -> Web3:
    """A Web3 on ``rpc_url`` that answered ``eth_chainId``; RpcUnavailable otherwise."""
    from web3 import HTTPProvider, Web3

    # web3 validates every call and transaction against eth_chainId: ask the node once
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        cache_allowed_requests=True,
        cacheable_requests={"eth_chainId"},
    )
    w3 = Web3(provider)
    with rpc_errors("eth_chainId", rpc_url):
        chain_id = w3.eth.chain_id
    if not isinstance(chain_id, int):  # pragma: no cover - a broken node
        raise RpcUnavailable(
            f"{rpc_url} answered eth_chainId with {chain_id!r}; is it an EVM node?"
        )
    return w3


def contract_at(w3: Web3, name: str, address: str) -> Contract:
    """Handle on the deployed contract ``name`` (TestUSD, Escrow, Registry) at ``address``."""
    from eth_utils import to_checksum_address

    return w3.eth.contract(address=to_checksum_address(address), abi=list(load_artifact(name).abi))


def _finish(w3: Web3, account: LocalAccount, tx: dict[str, Any], what: str) -> Any:
    with rpc_errors(what, _url(w3)):
        tx.setdefault("from", account.address)
        tx.setdefault("nonce", w3.eth.get_transaction_count(account.address, "pending"))
        tx.setdefault("chainId", w3.eth.chain_id)
        tx.setdefault("gasPrice", w3.eth.gas_price)
        if "gas" not in tx:
            tx["gas"] = w3.eth.estimate_gas(tx) * 6 // 5 + 10_000
        signed = account.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.02)
    if receipt["status"] != 1:
        raise TransactionReverted(
            f"{what} reverted on chain (tx {tx_hash.hex()}); it passed gas estimation, so the "
            "state changed in between: check the channel or pool and retry"
        )
    return receipt


def send(w3: Web3, account: LocalAccount, fn: Any, *, what: str = "", gas: int | None = None):
    """Sign and send the contract call ``fn`` (``contract.functions.x(...)``); the receipt."""
    what = what or _name(fn)
    with rpc_errors(what, _url(w3)):
        if gas is None:
            # against the pending block: a devnet that mined nothing for a while still has
            # an old latest block, and time-locked calls (withdraw after close_at) would
            # revert in estimation there although they succeed in the next block
            estimate = fn.estimate_gas({"from": account.address}, block_identifier="pending")
            gas = estimate * 6 // 5 + 10_000
        tx = fn.build_transaction({"from": account.address, "gas": gas, "gasPrice": 0})
    tx.pop("gasPrice", None)
    return _finish(w3, account, tx, what)


def send_value(w3: Web3, account: LocalAccount, to: str, value: int) -> Any:
    """Send ``value`` wei of the chain's gas coin from ``account`` to ``to``; the receipt."""
    return _finish(w3, account, {"to": to, "value": value, "gas": 21_000}, "send gas coin")


def call(fn: Any, *, what: str = "", **kwargs: Any) -> Any:
    """Run a view call; errors mapped like ``send``."""
    with rpc_errors(what or _name(fn)):
        return fn.call(**kwargs)


def deploy(w3: Web3, account: LocalAccount, name: str, *args: Any) -> str:
    """Deploy artifact ``name`` with constructor ``args``; its address."""
    art = load_artifact(name)
    factory = w3.eth.contract(abi=list(art.abi), bytecode=art.bytecode)
    with rpc_errors(f"deploy {name}", _url(w3)):
        tx = factory.constructor(*args).build_transaction({"from": account.address, "gasPrice": 0})
    tx.pop("gasPrice", None)
    tx.pop("gas", None)
    receipt = _finish(w3, account, tx, f"deploy {name}")
    return receipt["contractAddress"]


def _name(fn: Any) -> str:
    return str(getattr(fn, "fn_name", "contract call"))


def _url(w3: Web3) -> str:
    return str(getattr(w3.provider, "endpoint_uri", "") or "")
