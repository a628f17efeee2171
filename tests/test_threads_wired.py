"""``inertia.fit`` / ``inertia train`` and the sweep choose their intra-op threads with :mod:`inertia.threads`:
one for small work, ``--threads`` and ``OMP_NUM_THREADS`` honoured, the previous count restored, lanes never
more than the free cores."""
from __future__ import annotations

import pytest
import torch

import inertia
from inertia import threads as threads_module
from inertia.sweeps import SweepSpec, TaskSpec, _job, _load_data, parent_threads
from inertia.sweeps.lanes import lane_count


@pytest.fixture
def no_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def _fit_threads(**kw) -> set[int]:
    seen: set[int] = set()
    inertia.fit("digits", "linear", steps=3, batch_size=16, device="cpu",
                on_step=lambda step: seen.add(torch.get_num_threads()), **kw)
    return seen


@pytest.mark.usefixtures("no_omp")
def test_fit_trains_a_small_model_on_one_thread_and_restores_the_count():
    before = torch.get_num_threads()
    assert _fit_threads() == {1}
    assert _fit_threads(threads=2) == {2}
    assert torch.get_num_threads() == before


def test_fit_honours_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _fit_threads() == {2}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_a_bad_thread_count_is_one_line_naming_threads(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        inertia.fit("digits", "linear", steps=3, threads=bad)


def test_inertia_train_takes_threads(tmp_path, monkeypatch):
    from inertia.cli import main

    seen = []
    real = threads_module.use_threads
    monkeypatch.setattr("inertia.fits.use_threads", lambda n: seen.append(n) or real(n))
    assert main(["train", "--data", "digits", "--model", "linear", "--steps", "3", "--threads", "2", "--quiet",
                 "--device", "cpu"]) == 0
    assert seen[0] == 2


@pytest.mark.usefixtures("no_omp")
def test_the_sweeps_parent_threads_follow_the_work_and_the_request():
    data = _load_data("digits", 0)
    spec = SweepSpec.from_settings(TaskSpec.from_values(data, "linear", lr=[0.1], momentum=[0.0]),
                                   {"steps": 3, "seeds": 1}).resolved(data=data)
    job = _job(spec, data)
    assert parent_threads(job, 1, None) == 1      # a linear model on 8x8 digits is small work
    assert parent_threads(job, 1, 3) == 3


@pytest.mark.usefixtures("no_omp")
def test_lanes_take_the_usable_cores_or_the_request_never_the_load_average(monkeypatch):
    import inertia.sweeps.lanes as lanes

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(lanes, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads_module, "free_cores", lambda: 1)   # a busy machine: lanes still one per core
    assert lane_count(None, "cpu", 16) == 8
    assert lane_count(None, "cpu", 16, threads=2) == 2
    assert lane_count(None, "cpu", 2) == 2
    assert lane_count(None, "cuda", 16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert lane_count(None, "cpu", 16) == 1
