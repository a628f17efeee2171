"""Threads chosen from the work's size and the free cores, never more than asked."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from inertia.threads import SMALL_FLOPS, choose_threads, free_cores, step_flops, usable_cores


def test_small_work_runs_on_one_thread_large_work_on_the_free_cores():
    assert choose_threads(1e6, environ={}, free=lambda: 4) == 1
    assert choose_threads(SMALL_FLOPS * 10, environ={}, free=lambda: 1) == 1
    assert choose_threads(SMALL_FLOPS * 10, environ={}, free=lambda: 64) == min(64, usable_cores())


def test_omp_num_threads_and_an_explicit_count_are_honoured():
    assert choose_threads(1e6, environ={"OMP_NUM_THREADS": "3"}) == 3
    assert choose_threads(1e12, 2, environ={"OMP_NUM_THREADS": "3"}) == 2
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            choose_threads(1e6, bad)


def test_free_cores_subtracts_the_load_of_the_others():
    cores = usable_cores()
    assert free_cores(lambda: 0.0) == cores and free_cores(lambda: 0.9) == cores   # a fraction is no busy core
    assert free_cores(lambda: cores + 5.0) == 1
    def unreadable():
        raise OSError("no load average")
    assert free_cores(unreadable) == cores


def test_step_flops_counts_a_dense_model_as_three_forwards():
    model = nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 10))
    flops = step_flops(model, torch.randn(100, 40))
    assert flops == 3 * 2 * 100 * (40 * 100 + 100 * 10)
    assert flops < SMALL_FLOPS      # the README's MLP on a batch of 100 is small work
