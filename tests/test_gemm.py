"""The sweep engine's batched matrix products (inertia.sweeps.gemm), against float64 torch.matmul."""
from __future__ import annotations

import pytest
import torch

from inertia.sweeps import gemm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_openblas_is_installed_with_its_strided_batched_gemm():
    # a declared dependency: the OpenBLAS path must be testable wherever the suite runs
    assert gemm.openblas_core()


@pytest.fixture(params=["torch", "openblas"])
def product(request, monkeypatch):
    monkeypatch.setenv("INERTIA_GEMM", request.param)
    made = gemm.BatchedGemm("cpu", torch.float32)
    assert made.backend == request.param
    return made


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("batch", [None, 5])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_products_equal_float64_matmul(product, trans_a, trans_b, batch, beta):
    g = torch.Generator().manual_seed(0)
    m, n, k = 37, 23, 19
    lead = () if batch is None else (batch,)
    a = torch.randn(*lead, *((k, m) if trans_a else (m, k)), generator=g)
    b = torch.randn(*lead, *((n, k) if trans_b else (k, n)), generator=g)
    out = torch.randn(*lead, m, n, generator=g)
    op_a = a.double().transpose(-1, -2) if trans_a else a.double()
    op_b = b.double().transpose(-1, -2) if trans_b else b.double()
    expected = beta * out.double() + op_a @ op_b
    result = product(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=beta)
    assert result is out
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_a_shared_right_operand_equals_float64_matmul(product, trans_a, trans_b):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(4, *((19, 37) if trans_a else (37, 19)), generator=g)
    b = torch.randn(*((23, 19) if trans_b else (19, 23)), generator=g)
    out = torch.randn(4, 37, 23, generator=g)
    op_a = a.double().transpose(-1, -2) if trans_a else a.double()
    op_b = b.double().t() if trans_b else b.double()
    expected = out.double() + op_a @ op_b
    product(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=1.0)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared", [False, True])
def test_a_members_product_does_not_depend_on_the_others(product, shared):
    # what lets a diverged member leave the stack without changing the others' bits
    g = torch.Generator().manual_seed(1)
    count = 17
    a = torch.randn(count, 100, 40, generator=g)
    b = torch.randn(100, 40, generator=g) if shared else torch.randn(count, 100, 40, generator=g)
    together = product(a, b, torch.empty(count, 100, 100), trans_b=True)
    for i in (0, 3, 16):
        mine = b if shared else b[i:i + 1].clone()
        alone = product(a[i:i + 1].clone(), mine, torch.empty(1, 100, 100), trans_b=True)
        assert torch.equal(together[i], alone[0])
        if i:
            fewer = product(a[1:i + 1].clone(), b if shared else b[1:i + 1].clone(), torch.empty(i, 100, 100),
                            trans_b=True)
            assert torch.equal(together[i], fewer[-1])


def test_openblas_rejects_what_it_cannot_multiply(monkeypatch):
    monkeypatch.setenv("INERTIA_GEMM", "openblas")
    product = gemm.BatchedGemm()
    with pytest.raises(ValueError, match="contiguous"):
        product(torch.randn(4, 3).t(), torch.randn(4, 2), torch.empty(3, 2))
    with pytest.raises(ValueError, match="do not multiply"):
        product(torch.randn(3, 4), torch.randn(5, 2), torch.empty(3, 2))


def test_the_choice_of_gemm(monkeypatch):
    monkeypatch.setenv("INERTIA_GEMM", "openblas")
    assert gemm.BatchedGemm("cpu", torch.float32).backend == "openblas"
    assert gemm.BatchedGemm("cpu", torch.float64).backend == "torch"  # OpenBLAS here is float32 only
    assert gemm.BatchedGemm("meta", torch.float32).backend == "torch"
    monkeypatch.setenv("INERTIA_GEMM", "torch")
    assert gemm.BatchedGemm("cpu", torch.float32).backend == "torch"
    monkeypatch.setenv("INERTIA_GEMM", "fastest")
    with pytest.raises(ValueError, match="INERTIA_GEMM"):
        gemm.BatchedGemm()
    monkeypatch.delenv("INERTIA_GEMM")
    # auto: OpenBLAS only where it runs AVX-512 kernels and MKL would not (not an Intel CPU)
    for vendor, core, expected in [("AuthenticAMD", "SkylakeX", True), ("AuthenticAMD", "Cooperlake", True),
                                   ("GenuineIntel", "SkylakeX", False), ("AuthenticAMD", "Haswell", False),
                                   ("AuthenticAMD", None, False)]:
        monkeypatch.setattr(gemm, "_cpu_vendor", lambda: vendor)
        monkeypatch.setattr(gemm, "openblas_core", lambda: core)
        assert gemm.wants_openblas() == (expected and torch.backends.mkl.is_available()), (vendor, core)
