"""The one error tree of jupyter-gpumarket.

Every error the project raises is a :class:`GpuMarketError` and also subclasses the standard
exception it resembles, so callers that only know the stdlib still catch it. Every message says
what happened and what to do next.

.. code-block:: text

    GpuMarketError
     ├── ConfigError (ValueError) ............. bad option, kernel.json, profile, env var
     │    ├── NoProviderSelected .............. nothing says where to launch the kernel
     │    └── SyncTooLarge .................... notebook directory above the file-sync cap
     ├── ProtocolError (ValueError) ........... malformed tunnel frame / agent message
     │    ├── FrameTooLarge ................... frame above the negotiated maximum
     │    ├── UnsafePath ...................... a peer's path escapes the working dir
     │    └── LaunchStateConflict ............. a launch event its state does not allow
     ├── TunnelError (ConnectionError) ........ the websocket to a provider
     │    ├── ProviderUnreachable ............. cannot connect at all
     │    ├── TlsFingerprintMismatch .......... certificate is not the pinned one
     │    ├── AuthenticationFailed ............ token / session-key challenge refused
     │    ├── ProviderRefused ................. provider said no (capacity, bad request)
     │    └── LinkLost ........................ connection dropped and did not come back
     ├── KernelLaunchError (RuntimeError) ..... remote kernel did not start
     │    └── LaunchCancelled ................. the user cancelled the launch
     ├── AgentError (RuntimeError) ............ provider daemon problems (state dir, certs)
     ├── ChainError (RuntimeError) ............ RPC, contracts, devnet
     │    ├── RpcUnavailable (ConnectionError)
     │    ├── TransactionReverted
     │    └── ArtifactStale
     ├── WalletError (RuntimeError)
     │    ├── WrongPassword (PermissionError)
     │    └── KeystoreCorrupt (ValueError)
     └── PaymentError (ValueError) ............ voucher / channel / money rule broken
          └── LeaseStateChanged ............... another writer moved a lease's state first
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "ArtifactStale",
    "AuthenticationFailed",
    "ChainError",
    "ConfigError",
    "FrameTooLarge",
    "GpuMarketError",
    "KernelLaunchError",
    "KeystoreCorrupt",
    "LaunchCancelled",
    "LaunchStateConflict",
    "LeaseStateChanged",
    "LinkLost",
    "NoProviderSelected",
    "PaymentError",
    "ProtocolError",
    "ProviderRefused",
    "ProviderUnreachable",
    "RpcUnavailable",
    "SyncTooLarge",
    "TlsFingerprintMismatch",
    "TransactionReverted",
    "TunnelError",
    "UnsafePath",
    "WalletError",
    "WrongPassword",
]


class GpuMarketError(Exception):
    """Base of every error raised by jupyter-gpumarket."""


class ConfigError(GpuMarketError, ValueError):
    """A setting, file or environment variable is wrong; the message names it."""


class NoProviderSelected(ConfigError):
    """The provisioner has nothing that says where to launch the kernel."""


class SyncTooLarge(ConfigError):
    """The notebook's directory is bigger than the file-sync cap; the message names the biggest
    files and says how to exclude them (``.gpumarketignore``) or raise the cap."""


class ProtocolError(GpuMarketError, ValueError):
    """A peer sent bytes that are not a valid tunnel frame or agent message."""


class FrameTooLarge(ProtocolError):
    """A frame is larger than the maximum this side accepts."""


class UnsafePath(ProtocolError):
    """A file path is absolute, climbs out with ``..``, or resolves outside the working dir
    through a symlink; it is refused on both sides (renter and agent)."""


class TunnelError(GpuMarketError, ConnectionError):
    """The authenticated websocket between renter and provider failed."""


class ProviderUnreachable(TunnelError):
    """No connection could be made to the provider's URL."""


class TlsFingerprintMismatch(TunnelError):
    """The provider's TLS certificate does not match the pinned SHA-256 fingerprint."""


class AuthenticationFailed(TunnelError):
    """The provider refused our credentials (dev token or session-key signature)."""


class ProviderRefused(TunnelError):
    """The provider understood the request and declined it (capacity, bad request)."""


class LinkLost(TunnelError):
    """The link dropped and could not be re-established within the grace period."""


class KernelLaunchError(GpuMarketError, RuntimeError):
    """The remote kernel did not start."""


class AgentError(GpuMarketError, RuntimeError):
    """The provider daemon could not do its job (state dir, certificate, kernel backend)."""


class ChainError(GpuMarketError, RuntimeError):
    """Something on the chain side failed: RPC, contract call, devnet."""


class RpcUnavailable(ChainError, ConnectionError):
    """The JSON-RPC endpoint does not answer."""


class TransactionReverted(ChainError):
    """A transaction reverted; the message carries the contract's reason."""


class ArtifactStale(ChainError):
    """Compiled contract artifacts do not match the Vyper sources."""


class WalletError(GpuMarketError, RuntimeError):
    """The local wallet (keystore) could not be used."""


class WrongPassword(WalletError, PermissionError):
    """The keystore password is wrong."""


class KeystoreCorrupt(WalletError, ValueError):
    """The keystore file is not a valid encrypted key."""


class PaymentError(GpuMarketError, ValueError):
    """A voucher, channel or amount breaks the payment rules."""


class LeaseStateChanged(PaymentError):
    """A lease's recorded state changed between reading and writing it (another process won)."""


class LaunchStateConflict(ProtocolError):
    """A launch event the kernel's launch state does not allow (cancel once ready)."""


class LaunchCancelled(KernelLaunchError):
    """The user cancelled the kernel's launch before it was ready; nothing was billed."""
