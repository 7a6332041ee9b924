"""JSON-RPC on top of eth-tester + py-evm: the pure-pip devnet chain (no anvil, no npm).

``EmbeddedRpc.handle(request)`` answers one JSON-RPC request dict with a response dict by handing
it to web3's ``EthereumTesterProvider`` (which maps JSON-RPC onto eth-tester, snapshots, revert
and mine included) and hex-encoding its Python result for the wire. Only what that provider
lacks or answers unlike anvil is answered here: the chain id (31337, like anvil's), a gas price
above the base fee, ``evm_increaseTime``, anvil's results of ``evm_revert`` / ``evm_mine``,
calls at the pending block, and reverts in geth/anvil's error shape (with the raw revert data).
Accounts are the standard ten dev accounts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from jupyter_gpumarket.chain.dev_accounts import DEV_CHAIN_ID
from jupyter_gpumarket.exceptions import ChainError

__all__ = ["DEV_MNEMONIC", "EmbeddedRpc"]

DEV_MNEMONIC = "test test test test test test test test test test test junk"
_ERROR_SELECTOR = bytes.fromhex("08c379a0")
# anvil's results where the provider answers otherwise (it returns None / the mined hashes)
_ANVIL_RESULTS: dict[str, Any] = {"evm_revert": True, "evm_mine": "0x0"}
_AT_LATEST = frozenset({"eth_call", "eth_estimateGas"})  # asked at "pending", answered at "latest"


def _to_json(value: Any) -> Any:
    """The provider's Python result -> JSON-RPC: hex quantities, 0x bytes."""
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def _revert_data(exc: BaseException) -> tuple[str, str]:
    """(message, data) for a failed call, in geth/anvil's shape."""
    from eth_abi import decode, encode

    raw: Any = exc
    while isinstance(raw, BaseException):  # TransactionFailed(Revert(b"..."))
        raw = raw.args[0] if raw.args else ""
    if isinstance(raw, bytes):
        if raw[:4] == _ERROR_SELECTOR:
            (reason,) = decode(["string"], raw[4:])
            return f"execution reverted: {reason}", "0x" + raw.hex()
        return "execution reverted", "0x" + raw.hex()
    reason = str(raw).removeprefix("execution reverted: ")
    data = "0x08c379a0" + encode(["string"], [reason]).hex()
    return f"execution reverted: {reason}", data


class EmbeddedRpc:
    """A py-evm chain behind a JSON-RPC dispatcher (thread-safe: one request at a time)."""

    def __init__(self, chain_id: int = DEV_CHAIN_ID, balance: int = 10_000 * 10**18) -> None:
        try:
            from eth_tester import EthereumTester, PyEVMBackend
            from web3 import Web3
            from web3.providers.eth_tester import EthereumTesterProvider
        except ImportError as exc:
            raise ChainError(
                f"the embedded chain needs eth-tester and py-evm ({exc}); "
                "run `pip install 'eth-tester[py-evm]' py-evm` or install anvil (npm)"
            ) from None

        backend = PyEVMBackend.from_mnemonic(
            DEV_MNEMONIC,
            genesis_state_overrides={"balance": balance},
            num_accounts=10,
            hd_path="m/44'/60'/0'/0",
        )
        backend.chain.chain_id = chain_id
        self.chain_id = chain_id
        self.tester = EthereumTester(backend)
        provider = EthereumTesterProvider(self.tester)
        w3 = Web3(provider)
        # the provider's own request formatting (hex params, camelCase transactions) in front
        self._request = provider.request_func(w3, w3.middleware_onion)
        self._own: dict[str, Callable[..., Any]] = {
            "eth_chainId": lambda: chain_id,
            "net_version": lambda: str(chain_id),
            "eth_gasPrice": lambda: 2 * self._base_fee() + 10**9,
            "evm_increaseTime": self._increase_time,
        }
        self._lock = threading.Lock()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        from eth_tester.exceptions import TransactionFailed

        rid = request.get("id")
        method = str(request.get("method", ""))
        params = request.get("params") or []
        try:
            with self._lock:
                own = self._own.get(method)
                if own is not None:
                    result = own(*params)
                else:
                    if method in _AT_LATEST and len(params) > 1 and params[1] == "pending":
                        params = [params[0], "latest", *params[2:]]  # eth-tester has no pending
                    response = self._request(method, params)
                    if "error" in response:
                        return {"jsonrpc": "2.0", "id": rid, "error": dict(response["error"])}
                    result = _ANVIL_RESULTS.get(method, response.get("result"))
        except TransactionFailed as exc:
            # the provider re-raises a revert as text; the first one, in its context chain,
            # keeps the raw revert data
            first: BaseException = exc
            cause: BaseException | None = exc
            while cause is not None:
                if isinstance(cause, TransactionFailed):
                    first = cause
                cause = cause.__context__
            message, data = _revert_data(first)
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": 3, "message": message, "data": data},
            }
        except Exception as exc:  # every other failure is an RPC error, never a dead server
            error = {"code": -32000, "message": f"{exc.__class__.__name__}: {exc}"}
            return {"jsonrpc": "2.0", "id": rid, "error": error}
        return {"jsonrpc": "2.0", "id": rid, "result": _to_json(result)}

    def _base_fee(self) -> int:
        return int(self.tester.get_block_by_number("pending").get("base_fee_per_gas") or 0)

    def _increase_time(self, seconds: Any) -> int:
        seconds = int(seconds, 16) if isinstance(seconds, str) else int(seconds)
        pending = self.tester.get_block_by_number("pending")["timestamp"]
        self.tester.time_travel(pending + seconds)
        return seconds
