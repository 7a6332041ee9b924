"""Renters' attestations, read from the Escrow's ``Attested`` events, incremental from the last
block seen and cached on disk per network profile (as market/index.py reads offers).

.. code-block:: text

    refresh():  latest block B, cached up to block A (the same chain: A's hash still matches)
      eth_getLogs(escrow, Attested, A+1 .. B) in spans of MAX_BLOCK_SPAN blocks
      each log -> core.reputation.Attestation, or counted as malformed and left out
      cache <- attestations, B

Chain data is a stranger's (another escrow at the profile's address, a node that lies): a log
whose topics or data do not decode, or whose figures are outside what Escrow.attest accepts
(score above 100, TFLOPS above 20,000), is skipped and counted; at most MAX_ATTESTATIONS are
kept (the newest); the cache file is read up to MAX_CACHE_BYTES.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.escrow import check_attestation
from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.chain.profiles import NetworkProfile
from jupyter_gpumarket.core.reputation import Attestation
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError

__all__ = ["MAX_ATTESTATIONS", "AttestationIndex", "decode_attested"]

log = logging.getLogger(__name__)

MAX_ATTESTATIONS = 100_000
MAX_BLOCK_SPAN = 10_000
MAX_CACHE_BYTES = 32 * 1024 * 1024
CACHE_VERSION = 1
_EVENT = "Attested(bytes32,address,address,uint256,uint8,uint32)"


def _word(data: bytes, i: int) -> int:
    return int.from_bytes(data[32 * i : 32 * (i + 1)], "big")


def _address(topic: bytes) -> str:
    if len(topic) != 32 or any(topic[:12]):
        raise ConfigError("an address topic has high bits set")
    return "0x" + topic[12:].hex()


def decode_attested(entry: Any) -> Attestation:
    """One raw ``Attested`` log (topics: event, channel id, renter, provider; data: paid,
    score, measured_tflops_x100) as an Attestation; ConfigError when it is not a well-formed
    attestation Escrow.attest could have made."""
    try:
        topics = [bytes(t) for t in entry["topics"]]
        data = bytes(entry["data"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("not an event log") from None
    if len(topics) != 4 or len(data) != 96:
        raise ConfigError(f"{len(topics)} topics and {len(data)} data bytes (4 and 96 expected)")
    paid, score, tflops = _word(data, 0), _word(data, 1), _word(data, 2)
    check_attestation(score, tflops)
    if paid >= 2**160:
        raise ConfigError("paid is above what a channel holds")
    return Attestation(_address(topics[2]), _address(topics[3]), paid, score, tflops)


def cache_path(profile: NetworkProfile) -> Path:
    return gpumarket_home() / "market" / f"{profile.name}-{profile.chain_id}.attested.json"


class AttestationIndex:
    """The Attested events of one network profile's Escrow (see the module docstring)."""

    def __init__(self, profile: NetworkProfile, *, path: Path | None = None, w3: Any = None):
        self.profile = profile
        self.path = path or cache_path(profile)
        self._w3 = w3
        self.last_block = 0
        self.last_hash = ""
        self._items: list[list[Any]] = []  # [renter, provider, paid, score, tflops_x100]
        self.malformed = 0
        self.lock = threading.RLock()
        self._load()

    def _escrow(self) -> str:
        _token, escrow, _registry = self.profile.require_contracts()
        return str(escrow)

    def _load(self) -> None:
        data = statefile.read_cache(self.path, MAX_CACHE_BYTES, "attestation cache", log)
        if data is None:
            return
        if (
            not isinstance(data, dict)
            or data.get("version") != CACHE_VERSION
            or data.get("chain_id") != self.profile.chain_id
            or str(data.get("escrow", "")).lower() != self._escrow().lower()
            or not isinstance(data.get("last_block"), int)
            or not isinstance(data.get("last_hash"), str)
            or not isinstance(data.get("items"), list)
        ):
            return
        items = []
        for item in data["items"][-MAX_ATTESTATIONS:]:
            try:
                Attestation(*item)
            except (ConfigError, TypeError):
                continue
            items.append(item)
        self._items, self.last_block, self.last_hash = items, data["last_block"], data["last_hash"]

    def _save(self) -> None:
        from jupyter_gpumarket.safefs import write_atomic

        data = {
            "version": CACHE_VERSION,
            "chain_id": self.profile.chain_id,
            "escrow": self._escrow(),
            "last_block": self.last_block,
            "last_hash": self.last_hash,
            "items": self._items,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            write_atomic(fd, self.path.name, [json.dumps(data).encode()], mode=0o600)
        finally:
            os.close(fd)

    def refresh(self) -> int:
        """Read the Attested events since the last refresh; how many were added."""
        from web3 import Web3

        from jupyter_gpumarket.chain.client import connect
        from jupyter_gpumarket.chain.errors import rpc_errors

        with self.lock, rpc_errors("read the Escrow's attestations", self.profile.rpc_url):
            w3 = self._w3 = self._w3 or connect(self.profile.rpc_url)
            head = int(w3.eth.block_number)
            start = self.last_block + 1 if self.last_hash else 0
            if start and (head < self.last_block or _hash(w3, self.last_block) != self.last_hash):
                self._items, self.malformed, start = [], 0, 0  # another chain, or a reorg
            topic = "0x" + Web3.keccak(text=_EVENT).hex().removeprefix("0x")
            added = 0
            for lo in range(start, head + 1, MAX_BLOCK_SPAN):
                hi = min(head, lo + MAX_BLOCK_SPAN - 1)
                query: Any = {
                    "address": self._escrow(),
                    "fromBlock": lo,
                    "toBlock": hi,
                    "topics": [topic],
                }
                for entry in w3.eth.get_logs(query):
                    try:
                        a = decode_attested(entry)
                    except ConfigError as exc:
                        self.malformed += 1
                        log.info("skipped an Attested event: %s", exc)
                        continue
                    self._items.append(
                        [a.renter, a.provider, a.paid, a.score, a.measured_tflops_x100]
                    )
                    added += 1
            del self._items[:-MAX_ATTESTATIONS]
            self.last_block, self.last_hash = head, _hash(w3, head)
            try:
                self._save()
            except (OSError, GpuMarketError) as exc:
                log.warning("attestation cache %s not saved: %s", self.path, exc)
        return added

    def attestations(self) -> list[Attestation]:
        with self.lock:
            return [Attestation(*item) for item in self._items]


def _hash(w3: Any, block: int) -> str:
    return "0x" + bytes(w3.eth.get_block(block)["hash"]).hex()
