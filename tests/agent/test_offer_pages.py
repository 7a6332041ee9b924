"""A manifest in sync_offer pages: the renter's split (core) and the agent's gathering."""

from __future__ import annotations

import hashlib

import pytest

from jupyter_gpumarket.agent.offer_pages import OfferPages
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import MAX_ENTRIES, Manifest
from jupyter_gpumarket.exceptions import ProtocolError, SyncTooLarge

SHA = hashlib.sha256(b"x").hexdigest()


def _files(n: int, stem: str = "f") -> dict[str, list[object]]:
    return {f"d{i % 50}/{stem}{i:06d}": [i, SHA, i] for i in range(n)}


def test_a_small_manifest_is_one_page_in_the_message_it_always_was() -> None:
    (page,) = control.sync_offer_pages({"files": _files(3)})
    assert not page.more
    raw = control.dump(page)
    assert b"more" not in raw  # agents from before pages take it
    assert control.parse_request(raw) == page


def test_a_big_manifest_comes_in_pages_each_within_the_request_cap() -> None:
    manifest = {"files": _files(20_000, "x" * 200)}
    pages = control.sync_offer_pages(manifest)
    assert len(pages) > 10
    assert [p.more for p in pages] == [True] * (len(pages) - 1) + [False]
    for page in pages:
        raw = control.dump(page)
        assert len(raw) <= control.MANIFEST_PAGE_BYTES + 1024
        assert control.parse_request(raw) == page
    gather = OfferPages()
    results = [gather.take(p) for p in pages]
    assert results[:-1] == [None] * (len(pages) - 1)
    whole = results[-1]
    assert whole == manifest["files"]
    assert Manifest.from_json({"files": whole}).to_json() == Manifest.from_json(manifest).to_json()
    assert gather.take(control.SyncOffer(manifest={"files": {}})) == {}  # the next starts afresh


def test_the_agent_refuses_a_request_above_its_cap_before_parsing() -> None:
    big = control.dump(control.SyncOffer(manifest={"files": _files(8_000, "x" * 100)}))
    assert len(big) > control.MAX_REQUEST_BYTES
    with pytest.raises(ProtocolError, match="too large"):
        control.parse_request(big)
    assert control.parse_agent_message(big).manifest  # the renter still reads big manifests


def test_pages_are_bounded_as_they_arrive() -> None:
    gather = OfferPages()
    page = _files(MAX_ENTRIES // 4)
    for i in range(4):
        renamed = {f"p{i}/{k}": v for k, v in page.items()}
        assert gather.take(control.SyncOffer(manifest={"files": renamed}, more=True)) is None
    with pytest.raises(SyncTooLarge, match=f"more than the {MAX_ENTRIES:,}"):
        gather.take(control.SyncOffer(manifest={"files": {"one.txt": [1, SHA, 1]}}))
    assert gather.take(control.SyncOffer(manifest={"files": {"a": [1, SHA, 1]}})) == {
        "a": [1, SHA, 1]
    }  # the refused offer's pages are gone


def test_pages_of_long_names_are_bounded_by_their_bytes() -> None:
    gather = OfferPages()
    long_names = {f"{i:05d}" + "n" * 250: [1, SHA, 1] for i in range(2_000)}
    pages = [{f"d{i}/{k}": v for k, v in long_names.items()} for i in range(200)]
    refused = None
    for page in pages:
        try:
            gather.take(control.SyncOffer(manifest={"files": page}, more=True))
        except SyncTooLarge as exc:
            refused = str(exc)
            break
    assert refused is not None
    assert "pages pass" in refused


def test_a_path_on_two_pages_is_refused() -> None:
    gather = OfferPages()
    gather.take(control.SyncOffer(manifest={"files": {"a": [1, SHA, 1]}}, more=True))
    with pytest.raises(ProtocolError, match="two pages"):
        gather.take(control.SyncOffer(manifest={"files": {"a": [2, SHA, 1]}}))


@pytest.mark.parametrize("more", [1, "yes", None])
def test_more_must_be_a_boolean(more: object) -> None:
    raw = b'{"op":"sync_offer","manifest":{"files":{}},"more":' + repr(more).encode() + b"}"
    with pytest.raises(ProtocolError):
        control.parse_request(raw.replace(b"None", b"null").replace(b"'", b'"'))


def test_the_largest_environment_a_renter_may_send_fits_one_request() -> None:
    from jupyter_gpumarket.agent.kernel_env import (
        MAX_RENTER_ENV_BYTES,
        MAX_RENTER_ENV_VALUE_BYTES,
        check_renter_env,
    )

    n = MAX_RENTER_ENV_BYTES // MAX_RENTER_ENV_VALUE_BYTES - 1
    env = {f"V{i}": "x" * (MAX_RENTER_ENV_VALUE_BYTES - 8) for i in range(n)}
    check_renter_env(env)  # the agent would take it
    raw = control.dump(control.StartKernel(key="k" * 32, env=env))
    assert len(raw) <= control.MAX_REQUEST_BYTES // 2  # room for the kernel options too
    assert control.parse_request(raw).env == env
