"""The shared warm-up + cosine schedule."""

import pytest

from promptgen.toolkit.lr_schedules import warmup_cosine


def test_linear_warmup_then_cosine_to_zero():
    rates = [warmup_cosine(step, 10, 2, 1.0) for step in range(10)]
    assert rates[:2] == [0.5, 1.0]
    assert rates[2] == pytest.approx(1.0) and rates[6] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))


def test_constant_warmup_as_in_coop():
    assert [warmup_cosine(e, 5, 1, 2e-3, warmup_lr=1e-5) for e in range(2)] == [1e-5, pytest.approx(2e-3)]
