"""The offer index: every Registry offer of one network, read from the Registry's events,
incremental from the last block seen, cached on disk per network profile.

.. code-block:: text

    refresh():  latest block B, cached up to block A
      eth_getLogs(registry, OfferRegistered | OfferUpdated | OfferDeactivated, A+1 .. B)
        (in spans of MAX_BLOCK_SPAN blocks)  -> the offer ids those blocks touched
      Registry.offers(id) at block B for each touched id (offersPage where the Registry has it)
      cache <- offers, B                     (atomic write; a cache of another chain, another
                                              registry or a broken file is dropped and rebuilt)
    no eth_getLogs (an RPC that refuses logs): every offer by offersPage / offers(id), at B

Chain data is a stranger's: at most MAX_OFFERS offers are kept (ids past that are ignored and
the refresh says it was truncated), a log without the indexed offer id is skipped, an offer
whose fields do not parse is counted as ``malformed`` and left out, and the cache file is read
only up to MAX_CACHE_BYTES. :class:`BackgroundRefresh` keeps an index fresh from a daemon thread
for long-lived processes (a Jupyter server).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.chain.profiles import NetworkProfile
from jupyter_gpumarket.core.market_offer import MarketOffer
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError, ProtocolError

__all__ = [
    "MAX_BLOCK_SPAN",
    "MAX_CACHE_BYTES",
    "MAX_OFFERS",
    "OfferIndex",
    "RefreshStats",
    "cache_path",
]

log = logging.getLogger(__name__)

MAX_OFFERS = 10_000  # offers one index keeps (ranking 10,000 takes well under a second)
MAX_BLOCK_SPAN = 10_000  # blocks per eth_getLogs call (public RPCs refuse wider ones)
MAX_LOGS = 50_000  # logs one refresh looks at
MAX_CACHE_BYTES = 32 * 1024 * 1024
MAX_FIELD_CHARS = 1024  # the Registry's strings are at most 256 characters
PAGE = 50  # Registry.MAX_PAGE
CACHE_VERSION = 1
_EVENTS = (
    "OfferRegistered(uint256,address,uint256,address)",
    "OfferUpdated(uint256,address,uint256,address)",
    "OfferDeactivated(uint256,address)",
)


@dataclass(frozen=True)
class RefreshStats:
    """What one refresh did: the blocks it read, how (``events`` or ``pages``), what it found."""

    from_block: int
    to_block: int
    via: str
    logs: int
    offers_read: int
    malformed: int
    truncated: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cache_path(profile: NetworkProfile) -> Path:
    """``$GPUMARKET_HOME/market/<profile>-<chain id>.offers.json``."""
    return gpumarket_home() / "market" / f"{profile.name}-{profile.chain_id}.offers.json"


def _raw_to_json(raw: Any) -> list[Any]:
    out: list[Any] = []
    for value in raw:
        if isinstance(value, bytes | bytearray):
            out.append("0x" + bytes(value).hex())
        elif isinstance(value, str):
            if len(value) > MAX_FIELD_CHARS:
                raise ProtocolError(f"a Registry field is {len(value)} characters long")
            out.append(value)
        elif isinstance(value, bool | int):
            out.append(value)
        else:
            raise ProtocolError(f"a Registry field is a {type(value).__name__}")
    return out


def _raw_from_json(data: list[Any]) -> tuple[Any, ...]:
    raw = list(data)
    if len(raw) == 11 and isinstance(raw[2], str) and raw[2].startswith("0x"):
        raw[2] = bytes.fromhex(raw[2][2:])
    return tuple(raw)


def _offer(offer_id: int, raw: Any) -> MarketOffer | None:
    """The parsed offer, or None for an unset id. Raises ProtocolError when malformed."""
    try:
        return MarketOffer.from_registry(offer_id, _raw_from_json(_raw_to_json(raw)))
    except (ConfigError, ProtocolError, TypeError, ValueError) as exc:
        raise ProtocolError(f"offer {offer_id}: {exc}") from None


class OfferIndex:
    """The offers of one network profile's Registry (see the module docstring).

    Refreshes and reads hold ``lock`` (a background refresh thread may run meanwhile).
    """

    def __init__(
        self, profile: NetworkProfile, *, path: Path | None = None, w3: Any = None
    ) -> None:
        if profile.registry is None:
            profile.require_contracts()  # raises with how to add them
        self.profile = profile
        self.path = path or cache_path(profile)
        self._w3 = w3
        self._registry: Any = None
        self.last_block = 0
        self.last_hash = ""  # hash of last_block: another chain or a reorg there -> rebuild
        self._raw: dict[int, list[Any]] = {}  # offer id -> Registry.offers(id) as JSON
        self._offers: dict[int, MarketOffer] = {}
        self.malformed: dict[int, str] = {}
        self.last_stats: RefreshStats | None = None
        self.lock = threading.RLock()
        self._load()

    # -- cache -------------------------------------------------------------------------------
    def _load(self) -> None:
        data = statefile.read_cache(self.path, MAX_CACHE_BYTES, "offer cache", log)
        if data is None:
            return
        try:
            if (
                not isinstance(data, dict)
                or data.get("version") != CACHE_VERSION
                or data.get("chain_id") != self.profile.chain_id
                or str(data.get("registry", "")).lower() != str(self.profile.registry).lower()
            ):
                return  # another chain or registry (a restarted devnet): start over
            block, offers, block_hash = data["last_block"], data["offers"], data["last_hash"]
            if (
                not isinstance(block, int)
                or block < 0
                or not isinstance(offers, dict)
                or not isinstance(block_hash, str)
            ):
                return
            raw: dict[int, list[Any]] = {}
            for key, value in list(offers.items())[:MAX_OFFERS]:
                if key.isdigit() and isinstance(value, list):
                    raw[int(key)] = value
        except (KeyError, AttributeError, TypeError):
            return
        self._raw, self.last_block, self.last_hash = raw, block, block_hash[:66]
        self._offers = {}
        for offer_id, value in raw.items():
            self._parse(offer_id, value)

    def _save(self) -> None:
        from jupyter_gpumarket.safefs import write_atomic

        data = {
            "version": CACHE_VERSION,
            "network": self.profile.name,
            "chain_id": self.profile.chain_id,
            "registry": self.profile.registry,
            "last_block": self.last_block,
            "last_hash": self.last_hash,
            "offers": {str(k): v for k, v in sorted(self._raw.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            write_atomic(fd, self.path.name, [json.dumps(data).encode()], mode=0o600)
        finally:
            os.close(fd)

    def _parse(self, offer_id: int, value: list[Any]) -> None:
        try:
            offer = MarketOffer.from_registry(offer_id, _raw_from_json(value))
        except (ConfigError, ProtocolError, TypeError, ValueError) as exc:
            self.malformed[offer_id] = str(exc)[:200]
            self._offers.pop(offer_id, None)
            return
        self.malformed.pop(offer_id, None)
        if offer is None:
            self._offers.pop(offer_id, None)
        else:
            self._offers[offer_id] = offer

    # -- chain -------------------------------------------------------------------------------
    def _chain(self) -> tuple[Any, Any]:
        if self._registry is None:
            from jupyter_gpumarket.chain.client import connect, contract_at

            w3 = self._w3 or connect(self.profile.rpc_url)
            self._w3, self._registry = w3, contract_at(w3, "Registry", str(self.profile.registry))
        return self._w3, self._registry

    def _touched(self, w3: Any, start: int, end: int) -> tuple[set[int], int, bool]:
        """Offer ids the Registry's events name in blocks start..end; (ids, logs, truncated)."""
        from web3 import Web3

        topics = [["0x" + Web3.keccak(text=e).hex().removeprefix("0x") for e in _EVENTS]]
        ids: set[int] = set()
        logs = 0
        truncated = False
        for lo in range(start, end + 1, MAX_BLOCK_SPAN):
            hi = min(end, lo + MAX_BLOCK_SPAN - 1)
            found = w3.eth.get_logs(
                {
                    "address": self.profile.registry,
                    "fromBlock": lo,
                    "toBlock": hi,
                    "topics": topics,
                }
            )
            for entry in found:
                logs += 1
                entry_topics = entry.get("topics") or []
                if len(entry_topics) < 2:
                    continue  # not one of ours: every event indexes the offer id
                offer_id = int.from_bytes(bytes(entry_topics[1])[-32:], "big")
                if offer_id >= 1 and (offer_id in ids or len(ids) < MAX_OFFERS):
                    ids.add(offer_id)
                else:
                    truncated = True
                if logs >= MAX_LOGS:
                    return ids, logs, True
        return ids, logs, truncated

    @staticmethod
    def _hash(w3: Any, block: int) -> str:
        return "0x" + bytes(w3.eth.get_block(block)["hash"]).hex()

    def _read(self, registry: Any, ids: list[int], block: int) -> dict[int, Any]:
        """Registry.offers(id) for each id, at ``block`` (by pages where the Registry has them)."""
        out: dict[int, Any] = {}
        paged = any(item.get("name") == "offersPage" for item in registry.abi)
        if paged:
            wanted = set(ids)
            starts = sorted({(i - 1) // PAGE * PAGE + 1 for i in ids})
            for start in starts:
                page = registry.functions.offersPage(start, PAGE).call(block_identifier=block)
                for i, raw in enumerate(page[:PAGE]):
                    if start + i in wanted:
                        out[start + i] = raw
            return out
        for offer_id in ids:
            out[offer_id] = registry.functions.offers(offer_id).call(block_identifier=block)
        return out

    def refresh(self) -> RefreshStats:
        """Read what happened since the last refresh (see the module docstring)."""
        from jupyter_gpumarket.chain.errors import rpc_errors

        t0 = time.perf_counter()
        with self.lock, rpc_errors("read the Registry's offers", self.profile.rpc_url):
            w3, registry = self._chain()
            head = int(w3.eth.block_number)
            start = self.last_block + 1 if self.last_hash else 0
            if start and (
                head < self.last_block or self._hash(w3, self.last_block) != self.last_hash
            ):
                # another chain at the same address (a restarted devnet) or a reorg: start over
                self._raw, self._offers, self.malformed, start = {}, {}, {}, 0
            count = min(int(registry.functions.offer_count().call(block_identifier=head)), 2**63)
            via, logs, truncated = "events", 0, False
            if start > head:
                ids: list[int] = []
            else:
                try:
                    touched, logs, truncated = self._touched(w3, start, head)
                    ids = sorted(i for i in touched if i <= count)
                except (ValueError, OSError, GpuMarketError) as exc:
                    log.info("no Registry events from %s (%s): reading every offer", w3, exc)
                    via = "pages"
                    ids = list(range(1, min(count, MAX_OFFERS) + 1))
                    truncated = count > MAX_OFFERS
            room = MAX_OFFERS - len(self._raw)
            new = [i for i in ids if i not in self._raw]
            if len(new) > room:
                keep = set(new[: max(room, 0)])
                ids = [i for i in ids if i in self._raw or i in keep]
                truncated = True
            raws = self._read(registry, ids, head) if ids else {}
            for offer_id, raw in raws.items():
                try:
                    value = _raw_to_json(raw)
                except ProtocolError as exc:
                    self.malformed[offer_id] = str(exc)
                    self._raw.pop(offer_id, None)
                    self._offers.pop(offer_id, None)
                    continue
                self._raw[offer_id] = value
                self._parse(offer_id, value)
            self.last_block, self.last_hash = head, self._hash(w3, head)
            stats = RefreshStats(
                from_block=start,
                to_block=head,
                via=via,
                logs=logs,
                offers_read=len(raws),
                malformed=len(self.malformed),
                truncated=truncated,
                seconds=time.perf_counter() - t0,
            )
            self.last_stats = stats
            try:
                self._save()
            except (OSError, GpuMarketError) as exc:  # a read-only home still lists offers
                log.warning("offer cache %s not saved: %s", self.path, exc)
        return stats

    # -- reading -----------------------------------------------------------------------------
    def offers(
        self, *, active_only: bool = True, course_pool: str | None = None
    ) -> list[MarketOffer]:
        """Public offers, plus the course-private ones of ``course_pool`` (0x pool id)."""
        with self.lock:
            return [
                o
                for _, o in sorted(self._offers.items())
                if (o.active or not active_only) and course_visible(o, course_pool)
            ]

    def get(self, offer_id: int) -> MarketOffer | None:
        with self.lock:
            return self._offers.get(offer_id)


def course_visible(offer: MarketOffer, course_pool: str | None) -> bool:
    """A course-private offer (metadata ``course_pool``) is listed only for that course."""
    from jupyter_gpumarket.core.offer_meta import parse_offer_metadata

    private = parse_offer_metadata(offer.terms.metadata_uri).get("course_pool", "")
    return not private or (course_pool is not None and private.lower() == course_pool.lower())
