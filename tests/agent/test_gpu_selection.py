"""`provider serve --gpus`: which detected GPUs are rented out (H100 readings as fixtures)."""

from __future__ import annotations

import pytest
from test_gpu import FakeNvml, h100

from jupyter_gpumarket.agent.gpu import detect_gpus, select_gpus
from jupyter_gpumarket.exceptions import ConfigError


def _two() -> object:
    return detect_gpus(FakeNvml([h100(), h100(uuid="GPU-11111111-1111-1111-1111-111111111111")]))


def test_all_none_and_a_subset():
    inv = _two()
    assert select_gpus(inv, "all") is inv
    assert select_gpus(inv, "none").cpu_only
    one = select_gpus(inv, " 1 ")
    assert [g.index for g in one.gpus] == [1]
    assert "renting out 1 of 2" in one.reason
    assert one.to_json()["count"] == 1


@pytest.mark.parametrize(("spec", "match"), [("0,7", r"GPU \[7\]"), ("first", "indices")])
def test_a_wrong_selection_says_what_exists(spec, match):
    with pytest.raises(ConfigError, match=match):
        select_gpus(_two(), spec)
