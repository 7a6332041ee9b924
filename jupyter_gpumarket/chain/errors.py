"""The one place where web3 / requests / eth-account exceptions become project errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from jupyter_gpumarket.exceptions import GpuMarketError, RpcUnavailable, TransactionReverted

__all__ = ["revert_reason", "rpc_errors"]


def revert_reason(exc: BaseException) -> str:
    """The contract's revert string from a web3 error, without web3's prefixes."""
    message = getattr(exc, "message", None) or (exc.args[0] if exc.args else str(exc))
    text = str(message)
    for prefix in ("execution reverted: ", "execution reverted:", "revert: ", "reverted: "):
        if prefix in text:
            text = text.split(prefix, 1)[1]
    return text.strip() or "no reason given"


@contextlib.contextmanager
def rpc_errors(what: str, rpc_url: str = "") -> Iterator[None]:
    """Run a chain call; map lower-layer failures to RpcUnavailable / TransactionReverted.

    ``what`` names the operation for the message (``"Escrow.open"``).
    """
    import requests
    from web3 import exceptions as w3e

    where = f" at {rpc_url}" if rpc_url else ""
    try:
        yield
    except GpuMarketError:
        raise
    except w3e.ContractLogicError as exc:
        raise TransactionReverted(
            f"{what} reverted: {revert_reason(exc)}; fix the call (see the reason) and retry"
        ) from exc
    except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as exc:
        raise RpcUnavailable(
            f"{what}: the JSON-RPC endpoint{where} does not answer ({exc.__class__.__name__}); "
            "start it (`gpumarket devnet`) or check the network profile's rpc_url"
        ) from exc
    except w3e.TimeExhausted as exc:
        raise RpcUnavailable(
            f"{what}: no receipt in time{where}; check that the chain is mining"
        ) from exc
    except w3e.Web3RPCError as exc:
        reason = revert_reason(exc)
        if "revert" in str(exc).lower():
            raise TransactionReverted(f"{what} reverted: {reason}") from exc
        raise TransactionReverted(f"{what} was refused by the node: {reason}") from exc
    except (w3e.Web3Exception, ValueError) as exc:
        raise TransactionReverted(f"{what} failed: {exc}") from exc
