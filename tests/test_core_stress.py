"""Thread stress of the in-memory managers; the invariants are in tests/core_stress.py."""

from __future__ import annotations

import sys

import pytest

from .core_stress import assert_clean, run_stress, thread_runtime


@pytest.fixture
def fast_thread_switching():
    """Preempt threads 10x more often than by default: more interleavings per op."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(old)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_thread_stress_keeps_every_invariant(fast_thread_switching):
    summary = run_stress(thread_runtime(), workers=16, ops_per_worker=3200, time_limit=90.0)
    assert_clean(summary)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2])
def test_thread_stress_small_pool_heavy_contention(fast_thread_switching, seed):
    # Few ids: almost every create conflicts, deletes race creates and sends on the same id.
    summary = run_stress(
        thread_runtime(), workers=16, ops_per_worker=800, pool_size=4, seed=seed, time_limit=60.0
    )
    assert_clean(dict(summary, operations=50_000))  # the size check belongs to the main test
