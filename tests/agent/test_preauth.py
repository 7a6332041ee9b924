"""agent/preauth: the stranger budget counts per address and in all, and gives slots back."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.agent.preauth import PreauthBudget, PreauthSlot


def test_budget_per_address_and_in_all() -> None:
    budget = PreauthBudget(per_ip=2, total=3)
    a1, a2 = budget.admit("10.0.0.1"), budget.admit("10.0.0.1")
    assert isinstance(a1, PreauthSlot)
    assert isinstance(a2, PreauthSlot)
    assert "from 10.0.0.1" in str(budget.admit("10.0.0.1"))
    b1 = budget.admit("10.0.0.2")
    assert isinstance(b1, PreauthSlot)
    assert "(3)" in str(budget.admit("10.0.0.3"))  # the total is reached
    a1.release()
    a1.release()  # idempotent: a slot is given back once
    assert budget.pending == 2
    assert isinstance(budget.admit("10.0.0.3"), PreauthSlot)


def test_budget_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="per_ip"):
        PreauthBudget(per_ip=0, total=5)
