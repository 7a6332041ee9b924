# pragma version ~=0.4.3
"""
@title GpuMarket Registry
@notice Providers publish GPU offers here; renters read them from the events, `offers` or
        `offersPage` (at most MAX_PAGE offers per call). Prices are token base units per hour.
        The cost of `s` seconds is `price_per_hour * s // 3600` everywhere (`cost`, and
        core/money.py in Python).
        Bounds: a provider has at most MAX_ACTIVE_OFFERS active offers; a TLS fingerprint
        used by an active offer belongs to that offer's provider (nobody else can publish
        a copy of its endpoint + fingerprint until it deactivates them all).
"""


MAX_ACTIVE_OFFERS: constant(uint256) = 8
MAX_PAGE: constant(uint256) = 50


struct Offer:
    provider: address
    endpoint: String[256]
    tls_fingerprint: bytes32
    gpu_model: String[64]
    gpu_count: uint32
    vram_mb: uint32
    price_per_hour: uint256
    token: address
    region: String[32]
    metadata_uri: String[256]
    active: bool


event OfferRegistered:
    offer_id: indexed(uint256)
    provider: indexed(address)
    price_per_hour: uint256
    token: address


event OfferUpdated:
    offer_id: indexed(uint256)
    provider: indexed(address)
    price_per_hour: uint256
    token: address


event OfferDeactivated:
    offer_id: indexed(uint256)
    provider: indexed(address)


offers: public(HashMap[uint256, Offer])
offer_count: public(uint256)
active_offers: public(HashMap[address, uint256])
# per TLS fingerprint, one word: the provider whose active offers use it | their count << 160
_fingerprint: HashMap[bytes32, uint256]


@external
def register(
    endpoint: String[256],
    tls_fingerprint: bytes32,
    gpu_model: String[64],
    gpu_count: uint32,
    vram_mb: uint32,
    price_per_hour: uint256,
    token: address,
    region: String[32],
    metadata_uri: String[256],
) -> uint256:
    """
    @notice Publish an offer; ids start at 1. CPU-only offers use gpu_count 0.
    """
    self._check(endpoint, price_per_hour, token)
    self._activate(tls_fingerprint)
    offer_id: uint256 = self.offer_count + 1
    self.offer_count = offer_id
    self.offers[offer_id] = Offer(
        provider=msg.sender,
        endpoint=endpoint,
        tls_fingerprint=tls_fingerprint,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        vram_mb=vram_mb,
        price_per_hour=price_per_hour,
        token=token,
        region=region,
        metadata_uri=metadata_uri,
        active=True,
    )
    log OfferRegistered(offer_id=offer_id, provider=msg.sender, price_per_hour=price_per_hour, token=token)
    return offer_id


@external
def update(
    offer_id: uint256,
    endpoint: String[256],
    tls_fingerprint: bytes32,
    gpu_model: String[64],
    gpu_count: uint32,
    vram_mb: uint32,
    price_per_hour: uint256,
    token: address,
    region: String[32],
    metadata_uri: String[256],
):
    """
    @notice Replace every field of an offer you own (this also reactivates it).
    """
    assert self.offers[offer_id].provider == msg.sender, "registry: not your offer"
    self._check(endpoint, price_per_hour, token)
    if self.offers[offer_id].active:
        self._deactivate(self.offers[offer_id].tls_fingerprint)
    self._activate(tls_fingerprint)
    self.offers[offer_id] = Offer(
        provider=msg.sender,
        endpoint=endpoint,
        tls_fingerprint=tls_fingerprint,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        vram_mb=vram_mb,
        price_per_hour=price_per_hour,
        token=token,
        region=region,
        metadata_uri=metadata_uri,
        active=True,
    )
    log OfferUpdated(offer_id=offer_id, provider=msg.sender, price_per_hour=price_per_hour, token=token)


@external
def deactivate(offer_id: uint256):
    """
    @notice Withdraw an offer from the market (it stays readable, with `active` false).
    """
    assert self.offers[offer_id].provider == msg.sender, "registry: not your offer"
    assert self.offers[offer_id].active, "registry: offer already inactive"
    self.offers[offer_id].active = False
    self._deactivate(self.offers[offer_id].tls_fingerprint)
    log OfferDeactivated(offer_id=offer_id, provider=msg.sender)


@external
@view
def fingerprint_provider(tls_fingerprint: bytes32) -> address:
    """
    @notice The provider whose active offers use `tls_fingerprint` (zero: none does).
    """
    word: uint256 = self._fingerprint[tls_fingerprint]
    if word >> 160 == 0:
        return empty(address)
    return convert(convert(word & (2**160 - 1), uint160), address)


@external
@view
def offersPage(start: uint256, count: uint256) -> DynArray[Offer, MAX_PAGE]:
    """
    @notice Offers `start`, `start + 1`, ... (at most `count`, at most MAX_PAGE, never past
            `offer_count`), inactive ones included: entry `i` is offer `start + i`.
    """
    out: DynArray[Offer, MAX_PAGE] = []
    last: uint256 = self.offer_count
    if start == 0 or start > last:
        return out
    n: uint256 = min(min(count, MAX_PAGE), last - start + 1)
    for i: uint256 in range(n, bound=MAX_PAGE):
        out.append(self.offers[start + i])
    return out


@external
@pure
def cost(price_per_hour: uint256, seconds: uint256) -> uint256:
    """
    @notice Cost of `seconds` at `price_per_hour`, rounded down (the rule core/money.py copies).
    """
    return price_per_hour * seconds // 3600


@internal
def _activate(tls_fingerprint: bytes32):
    active: uint256 = self.active_offers[msg.sender] + 1
    assert active <= MAX_ACTIVE_OFFERS, "registry: a provider has at most 8 active offers; deactivate one first"
    self.active_offers[msg.sender] = active
    word: uint256 = self._fingerprint[tls_fingerprint]
    owner: uint256 = convert(msg.sender, uint256)
    if word >> 160 != 0:
        assert word & (2**160 - 1) == owner, "registry: another provider's active offer uses this TLS fingerprint"
    self._fingerprint[tls_fingerprint] = ((word >> 160) + 1) << 160 | owner


@internal
def _deactivate(tls_fingerprint: bytes32):
    self.active_offers[msg.sender] -= 1
    self._fingerprint[tls_fingerprint] -= 1 << 160


@internal
@pure
def _check(endpoint: String[256], price_per_hour: uint256, token: address):
    assert len(endpoint) > 0, "registry: endpoint is empty"
    assert price_per_hour > 0, "registry: price_per_hour is zero"
    assert token != empty(address), "registry: token is the zero address"
