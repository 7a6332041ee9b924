"""JSON-RPC on top of eth-tester + py-evm: the pure-pip devnet chain (no anvil, no npm).

``EmbeddedRpc.handle(request)`` answers one JSON-RPC request dict with a response dict. It covers
what web3.py and ethers use for deploying, sending raw transactions and reading state, plus
anvil's ``evm_snapshot`` / ``evm_revert`` / ``evm_increaseTime`` / ``evm_mine``. Accounts are the
standard ten dev accounts; the chain id is 31337, like anvil's.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from jupyter_gpumarket.chain.dev_accounts import DEV_CHAIN_ID
from jupyter_gpumarket.exceptions import ChainError

__all__ = ["DEV_MNEMONIC", "EmbeddedRpc"]

DEV_MNEMONIC = "test test test test test test test test test test test junk"
_CAMEL = re.compile(r"_([a-z0-9])")
_SNAKE = re.compile(r"(?<!^)([A-Z])")
_TX_KEYS = {
    "from",
    "to",
    "data",
    "value",
    "gas",
    "gas_price",
    "max_fee_per_gas",
    "max_priority_fee_per_gas",
    "nonce",
}
_ERROR_SELECTOR = bytes.fromhex("08c379a0")
_QUANTITIES = {"value", "gas", "gas_price", "max_fee_per_gas", "max_priority_fee_per_gas", "nonce"}


def _to_rpc(value: Any, key: str = "") -> Any:
    """eth-tester output -> JSON-RPC: camelCase keys, hex quantities, 0x bytes."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name = "miner" if k == "coinbase" else _CAMEL.sub(lambda m: m.group(1).upper(), k)
            out[name] = _to_rpc(v, name)
        return out
    if isinstance(value, list | tuple):
        return [_to_rpc(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def _tx_from_rpc(tx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tx.items():
        name = _SNAKE.sub(r"_\1", k).lower()
        if name == "input":
            name = "data"
        if name not in _TX_KEYS or v is None:
            continue
        out[name] = int(v, 16) if name in _QUANTITIES and isinstance(v, str) else v
    # eth_call may omit the sender; eth-tester needs one that can afford the call's gas
    out.setdefault("from", "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
    return out


def _block_id(tag: Any) -> Any:
    if isinstance(tag, str) and tag.startswith("0x"):
        return int(tag, 16)
    return tag or "latest"


def _revert_data(exc: Exception) -> tuple[str, str]:
    """(message, data) for a failed call, in geth/anvil's shape."""
    from eth_abi import decode, encode

    raw: Any = exc
    while isinstance(raw, Exception):  # TransactionFailed(Revert(b"..."))
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
        self._lock = threading.Lock()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        from eth_tester.exceptions import TransactionFailed

        rid = request.get("id")
        method = request.get("method", "")
        params = request.get("params") or []
        fn = getattr(self, "rpc_" + str(method), None)
        if fn is None:
            error = {
                "code": -32601,
                "message": f"method {method} is not supported by the embedded chain",
            }
            return {"jsonrpc": "2.0", "id": rid, "error": error}
        try:
            with self._lock:
                result = fn(*params)
        except TransactionFailed as exc:
            message, data = _revert_data(exc)
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": 3, "message": message, "data": data},
            }
        except Exception as exc:  # every other failure is an RPC error, never a dead server
            error = {"code": -32000, "message": f"{exc.__class__.__name__}: {exc}"}
            return {"jsonrpc": "2.0", "id": rid, "error": error}
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    # --- eth_* ---------------------------------------------------------------------------
    def rpc_eth_chainId(self) -> str:
        return hex(self.chain_id)

    def rpc_net_version(self) -> str:
        return str(self.chain_id)

    def rpc_web3_clientVersion(self) -> str:
        return "gpumarket-embedded/py-evm"

    def rpc_eth_accounts(self) -> list[str]:
        return list(self.tester.get_accounts())

    def rpc_eth_blockNumber(self) -> str:
        return hex(self.tester.get_block_by_number("latest")["number"])

    def rpc_eth_getBlockByNumber(self, tag: Any, full: bool = False) -> Any:
        from eth_tester.exceptions import BlockNotFound

        try:
            block = self.tester.get_block_by_number(_block_id(tag), full_transactions=full)
        except BlockNotFound:
            return None
        return _to_rpc(block)

    def rpc_eth_getBlockByHash(self, block_hash: str, full: bool = False) -> Any:
        return _to_rpc(self.tester.get_block_by_hash(block_hash, full_transactions=full))

    def rpc_eth_getBalance(self, address: str, tag: Any = "latest") -> str:
        return hex(self.tester.get_balance(address, _block_id(tag)))

    def rpc_eth_getTransactionCount(self, address: str, tag: Any = "latest") -> str:
        return hex(self.tester.get_nonce(address, _block_id(tag)))

    def rpc_eth_getCode(self, address: str, tag: Any = "latest") -> str:
        return _to_rpc(self.tester.get_code(address, _block_id(tag)))

    def rpc_eth_getStorageAt(self, address: str, slot: str, tag: Any = "latest") -> str:
        value = self.tester.get_storage_at(address, int(slot, 16), _block_id(tag))
        return _to_rpc(value)

    def _base_fee(self) -> int:
        return int(self.tester.get_block_by_number("pending").get("base_fee_per_gas") or 0)

    def rpc_eth_gasPrice(self) -> str:
        return hex(2 * self._base_fee() + 10**9)

    def rpc_eth_maxPriorityFeePerGas(self) -> str:
        return hex(10**9)

    def rpc_eth_estimateGas(self, tx: dict[str, Any], tag: Any = "latest") -> str:
        block = "latest" if tag == "pending" else _block_id(tag)
        return hex(self.tester.estimate_gas(_tx_from_rpc(tx), block))

    def rpc_eth_call(self, tx: dict[str, Any], tag: Any = "latest", *_: Any) -> str:
        block = "latest" if tag == "pending" else _block_id(tag)
        return _to_rpc(self.tester.call(_tx_from_rpc(tx), block))

    def rpc_eth_sendRawTransaction(self, raw: str) -> str:
        return self.tester.send_raw_transaction(raw)

    def rpc_eth_getTransactionReceipt(self, tx_hash: str) -> Any:
        from eth_tester.exceptions import TransactionNotFound

        try:
            return _to_rpc(self.tester.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            return None

    def rpc_eth_getTransactionByHash(self, tx_hash: str) -> Any:
        from eth_tester.exceptions import TransactionNotFound

        try:
            return _to_rpc(self.tester.get_transaction_by_hash(tx_hash))
        except TransactionNotFound:
            return None

    def rpc_eth_getLogs(self, flt: dict[str, Any]) -> list[Any]:
        def block(key: str) -> Any:
            value = _block_id(flt.get(key))
            if value == "latest":
                return self.tester.get_block_by_number("latest")["number"]
            return 0 if value == "earliest" else value

        filter_id = self.tester.create_log_filter(
            from_block=block("fromBlock"),
            to_block=block("toBlock"),
            address=flt.get("address"),
            topics=flt.get("topics"),
        )
        try:
            return _to_rpc(list(self.tester.get_all_filter_logs(filter_id)))
        finally:
            self.tester.delete_filter(filter_id)

    # --- anvil-compatible test methods ----------------------------------------------------
    def rpc_evm_snapshot(self) -> str:
        return hex(self.tester.take_snapshot())

    def rpc_evm_revert(self, snapshot_id: str) -> bool:
        self.tester.revert_to_snapshot(int(snapshot_id, 16))
        return True

    def rpc_evm_increaseTime(self, seconds: Any) -> str:
        seconds = int(seconds, 16) if isinstance(seconds, str) else int(seconds)
        pending = self.tester.get_block_by_number("pending")["timestamp"]
        self.tester.time_travel(pending + seconds)
        return hex(seconds)

    def rpc_evm_mine(self, *_: Any) -> str:
        self.tester.mine_blocks(1)
        return "0x0"
