"""Shared GPU slices, the pure part (core/gpu_slices.py): what an offer says of its slice, the
kernel's slice environment, and when a kernel over its slice is warned and stopped."""

from __future__ import annotations

from fractions import Fraction

import pytest

from jupyter_gpumarket.core.gpu_slices import (
    GpuSlice,
    SliceMode,
    SliceTerms,
    VramWatch,
    describe_slice,
    mig_cap_nodes,
    mig_profile_of,
    parse_mig_profile,
    time_slices,
)
from jupyter_gpumarket.core.market_offer import Constraints, MarketOffer, Policy
from jupyter_gpumarket.core.offer_meta import offer_metadata, parse_offer_metadata
from jupyter_gpumarket.core.offer_terms import PublishedTerms
from jupyter_gpumarket.core.ranking import effective_tflops, rank, slice_json
from jupyter_gpumarket.core.verification import Level
from jupyter_gpumarket.exceptions import ConfigError

CHEAP = Policy.CHEAPEST
H100_MIB = 85520809984 // (1024 * 1024)  # tests/fixtures/gpu/h100-nvml.json: memory_total


def test_time_slices_share_the_gpu_memory_equally() -> None:
    slices = time_slices({0: H100_MIB}, 4)
    assert [s.name for s in slices] == [f"gpu0/slice{i}" for i in range(4)]
    assert {s.vram_mib for s in slices} == {H100_MIB // 4}
    assert {s.mode for s in slices} == {SliceMode.WATCHED}
    two_gpus = time_slices({1: 1000, 0: 2000}, 2, vram_mib=400)
    assert [(s.gpu_index, s.number, s.vram_mib) for s in two_gpus] == [
        (0, 0, 400),
        (0, 1, 400),
        (1, 0, 400),
        (1, 1, 400),
    ]


@pytest.mark.parametrize(
    ("gpus", "count", "vram", "words"),
    [
        ({0: 1000}, 1, None, "between 2 and 64"),
        ({0: 1000}, 65, None, "between 2 and 64"),
        ({0: 1000}, True, None, "between 2 and 64"),
        ({}, 2, None, "CPU only"),
        ({0: 1000}, 2, 501, "at most 500"),
        ({0: 1000}, 2, 0, "at most 500"),
    ],
)
def test_time_slices_refuse_what_does_not_fit(
    gpus: dict[int, int], count: int, vram: int | None, words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        time_slices(gpus, count, vram_mib=vram)


def test_each_slice_pins_its_kernel_in_the_environment() -> None:
    watched = time_slices({2: 80000}, 2)[1]
    assert watched.env() == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "2",
        "GPUMARKET_GPU_SLICE": "gpu2/slice1",
        "GPUMARKET_GPU_SLICE_VRAM_MIB": "40000",
    }
    mps = time_slices({0: 80000}, 4, mps_pipe_dir="/tmp/nvidia-mps")[0]
    assert mps.env()["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20000M"
    assert mps.env()["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/nvidia-mps"
    assert mps.env()["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    uuid = "MIG-11111111-2222-3333-4444-555555555555"
    for given in (uuid, uuid.removeprefix("MIG-")):
        mig = GpuSlice(0, 0, 9984, SliceMode.MIG, mig_uuid=given)
        assert mig.env()["CUDA_VISIBLE_DEVICES"] == uuid
        assert "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT" not in mig.env()


def test_a_slice_says_its_mode_consistently() -> None:
    with pytest.raises(ConfigError, match="MIG uuid"):
        GpuSlice(0, 0, 100, SliceMode.MIG)
    with pytest.raises(ConfigError, match="MIG uuid"):
        GpuSlice(0, 0, 100, SliceMode.WATCHED, mig_uuid="MIG-x")
    with pytest.raises(ConfigError, match="pipe dir"):
        GpuSlice(0, 0, 100, SliceMode.MPS)


def test_mig_profiles_are_read_from_nvml_names() -> None:
    assert mig_profile_of("NVIDIA H100 80GB HBM3 MIG 1g.10gb") == "1g.10gb"
    assert mig_profile_of("NVIDIA A100-SXM4-80GB MIG 3g.40gb") == "3g.40gb"
    assert mig_profile_of("NVIDIA H100 80GB HBM3") is None
    assert mig_profile_of("NVIDIA H100 MIG ;rm -rf") is None
    assert parse_mig_profile(" 1G.10GB ") == "1g.10gb"
    for bad in ("1g", "0g.10gb", "1g.10gb;x", "", None, 7):
        with pytest.raises(ConfigError, match=r"like 1g\.10gb"):
            parse_mig_profile(bad)


def test_slice_terms_travel_in_the_offer_metadata() -> None:
    terms = SliceTerms("1/4", 20389)
    meta = offer_metadata(isolation="sandboxed", relay_fee=10000, **terms.to_meta())
    assert meta == "gpumarket:isolation=sandboxed;relay_fee=10000;slice=1/4;slice_vram=20389"
    assert SliceTerms.from_meta(parse_offer_metadata(meta)) == terms
    mig = SliceTerms.for_mig("1g.10gb", 9984, "NVIDIA H100 80GB HBM3")
    assert mig == SliceTerms("1/7", 9984, "1g.10gb")
    assert SliceTerms.from_meta(parse_offer_metadata(offer_metadata(**mig.to_meta()))) == mig
    assert SliceTerms.for_mig("2g.12gb", 12000, "NVIDIA A30").share == "2/4"
    assert mig.fraction == Fraction(1, 7)


@pytest.mark.parametrize(
    "hostile",
    [
        {"slice": "1/4"},  # no VRAM
        {"slice": "4/4", "slice_vram": "100"},  # a whole GPU is no slice
        {"slice": "0/4", "slice_vram": "100"},
        {"slice": "1/65", "slice_vram": "100"},
        {"slice": "1/4 ", "slice_vram": "100"},
        {"slice": "1/4", "slice_vram": "-1"},
        {"slice": "1/4", "slice_vram": "0"},
        {"slice": "1/4", "slice_vram": "9" * 400},  # not parsed into a huge int
        {"slice": "1/4", "slice_vram": "\u0661\u0660\u0660"},  # digits, but not ASCII ones
        {"slice": "1/4", "slice_vram": "100", "mig": "../../etc"},
        {"slice_vram": "100"},
    ],
)
def test_malformed_slice_metadata_is_no_slice(hostile: dict[str, str]) -> None:
    assert SliceTerms.from_meta(hostile) is None


def test_the_picker_words_say_share_gpu_and_memory() -> None:
    assert describe_slice(SliceTerms("1/4", 20480), "A100 80GB") == "1/4 of an A100 80GB, 20 GB"
    assert describe_slice(SliceTerms("1/2", 40000), "H100 SXM") == "1/2 of an H100 SXM, 39 GB"
    assert describe_slice(SliceTerms("1/8", 2048), "T4") == "1/8 of a T4, 2.0 GB"
    assert (
        describe_slice(SliceTerms("1/7", 9984, "1g.10gb"), "H100 SXM")
        == "MIG 1g.10gb, 1/7 of an H100 SXM, 9.8 GB"
    )


def _offer(offer_id: int, meta: str, price: int = 1000) -> MarketOffer:
    terms = PublishedTerms(
        endpoint=f"wss://127.0.0.1:{9000 + offer_id}",
        tls_fingerprint="sha256:" + "ab" * 32,
        gpu_model="H100-80GB",
        gpu_count=1,
        vram_mb=H100_MIB,
        price_per_hour=price,
        token="0x" + "11" * 20,
        region="local",
        metadata_uri=meta,
    )
    return MarketOffer(offer_id, "0x" + "22" * 20, terms)


def test_the_market_sees_the_slice_and_filters_by_its_vram() -> None:
    whole = _offer(1, offer_metadata(isolation="sandboxed"), price=4000)
    quarter = _offer(2, offer_metadata(isolation="sandboxed", **SliceTerms("1/4", 20389).to_meta()))
    assert whole.slice is None
    assert whole.vram_mib == H100_MIB
    assert quarter.slice == SliceTerms("1/4", 20389)
    assert quarter.vram_mib == 20389
    # the on-chain VRAM stays the GPU's: class and verification read it
    assert quarter.gpu_class == whole.gpu_class
    assert quarter.gpu_class is not None
    ranked = rank([whole, quarter], {}, Constraints(min_vram_mib=30000), CHEAP, require_probe=False)
    assert [r.offer.offer_id for r in ranked if r.usable] == [1]  # 20 GB is not 30 GB
    ranked = rank([whole, quarter], {}, Constraints(), CHEAP, require_probe=False)
    assert [r.offer.offer_id for r in ranked if r.usable] == [2, 1]  # cheapest first
    j = ranked[0].to_json()
    assert j["slice"] == {
        "share": "1/4",
        "vram_mib": 20389,
        "mig_profile": None,
        "label": f"1/4 of an {quarter.gpu_class.name}, 20 GB",
    }
    assert j["vram_mib"] == H100_MIB  # an existing key keeps its meaning
    assert ranked[1].to_json()["slice"] is None
    assert slice_json(whole) is None
    level = Level.SELF_REPORTED
    assert effective_tflops(quarter, level) == pytest.approx(effective_tflops(whole, level) / 4)


def test_a_cpu_offer_has_no_slice() -> None:
    terms = _offer(1, "").terms
    cpu = MarketOffer(
        3,
        "0x" + "22" * 20,
        PublishedTerms(
            **{
                **terms.to_json(),
                "gpu_model": "CPU",
                "gpu_count": 0,
                "vram_mb": 0,
                "metadata_uri": offer_metadata(slice="1/2", slice_vram=100),
            }
        ),
    )
    assert cpu.slice is None


def test_vram_watch_warns_near_and_over_then_stops_after_the_grace() -> None:
    w = VramWatch(1000, grace=10.0)
    assert w.observe(0.0, None) is None  # NVML could not say
    assert w.observe(1.0, 500) is None
    near = w.observe(2.0, 950)
    assert near is not None
    assert near[0] == "warn"
    assert "950 MiB of its 1000 MiB" in near[1]
    assert w.observe(3.0, 960) is None  # once
    over = w.observe(4.0, 1200)
    assert over is not None
    assert over[0] == "warn"
    assert "within 10 s" in over[1]
    assert w.observe(13.9, 1200) is None
    stop = w.observe(14.0, 1300)
    assert stop is not None
    assert stop[0] == "stop"
    assert "over its 1000 MiB slice" in stop[1]
    assert "stopped" in stop[1]


def test_vram_watch_forgives_a_kernel_that_frees_memory_in_time() -> None:
    w = VramWatch(1000, grace=10.0)
    assert w.observe(0.0, 1500) is not None  # warned
    assert w.observe(5.0, 800) is None  # freed it
    again = w.observe(20.0, 1100)
    assert again is not None
    assert again[0] == "warn"
    assert w.observe(29.0, 1100) is None
    stop = w.observe(30.0, 1100)
    assert stop is not None
    assert stop[0] == "stop"


MIG_MINORS = """config 1
monitor 2
gpu0/gi1/access 12
gpu0/gi1/ci0/access 13
gpu0/gi2/access 21
gpu0/gi2/ci0/access 22
gpu1/gi1/access 147
gpu1/gi1/ci0/access 148
"""


def test_mig_capability_nodes_are_the_instances_own() -> None:
    assert mig_cap_nodes(MIG_MINORS, 0, 2, 0) == (
        "/dev/nvidia-caps/nvidia-cap21",
        "/dev/nvidia-caps/nvidia-cap22",
    )
    assert mig_cap_nodes(MIG_MINORS, 1, 1, 0) == (
        "/dev/nvidia-caps/nvidia-cap147",
        "/dev/nvidia-caps/nvidia-cap148",
    )
    assert mig_cap_nodes(MIG_MINORS, 0, 3, 0) == ()  # not listed: none, never a guess
    assert mig_cap_nodes("gpu0/gi1/access 12\n", 0, 1, 0) == ()  # half of it
    hostile = "gpu0/gi1/access ../../sda\ngpu0/gi1/ci0/access 99999999\n"
    assert mig_cap_nodes(hostile, 0, 1, 0) == ()
