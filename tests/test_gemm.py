"""The sweep engine's batched matrix products (inertia.sweeps.gemm), against float64 torch.matmul."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inertia.sweeps import gemm

needs_openblas = pytest.mark.skipif(gemm.openblas_core() is None,
                                    reason="scipy-openblas32 is not installed (pip install 'inertia[openblas]')")


def _takes_the_openblas_path() -> bool:
    """An AVX-512 CPU that is not Intel's, where scripts/setup.sh installs scipy-openblas32."""
    try:
        cpu = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpu.splitlines() if line.startswith("flags")), [])
    return {"avx512f", "avx512bw"} <= set(flags) and "GenuineIntel" not in cpu and torch.backends.mkl.is_available()


@pytest.mark.skipif(not _takes_the_openblas_path(), reason="OpenBLAS's products apply on AVX-512 CPUs not Intel's")
def test_openblas_is_installed_where_it_applies():
    # scripts/setup.sh installs the extra here: the OpenBLAS path must be tested where it runs
    assert gemm.openblas_core()


@pytest.fixture(params=["torch", pytest.param("openblas", marks=needs_openblas)])
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


@needs_openblas
def test_openblas_rejects_what_it_cannot_multiply(monkeypatch):
    monkeypatch.setenv("INERTIA_GEMM", "openblas")
    product = gemm.BatchedGemm()
    with pytest.raises(ValueError, match="do not multiply"):
        product(torch.randn(3, 4), torch.randn(5, 2), torch.empty(3, 2))
    with pytest.raises(ValueError, match="do not multiply"):
        product(torch.randn(3), torch.randn(3, 2), torch.empty(2))


def _operands(dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(3)
    return [torch.randn(*shape, generator=g).to(device, dtype) for shape in ((2, 5, 4), (2, 4, 3), (2, 5, 3))]


@needs_openblas
@pytest.mark.parametrize("which", range(3))
@pytest.mark.parametrize("wrong,expected", [
    (lambda t: t.double(), "is torch.float64 on cpu"),
    (lambda t: t.half(), "is torch.float16 on cpu"),
    (lambda t: torch.empty(t.shape[:-1] + (2 * t.shape[-1],))[..., ::2], r"is torch.float32 on cpu, shape .*, strides \(\d+, \d+, 2\)"),
    (lambda t: t.transpose(-1, -2).contiguous().transpose(-1, -2), r"is torch.float32 on cpu, shape .*, strides \(\d+, 1, \d+\)"),
    (lambda t: t.to_sparse(), "is torch.float32 on cpu with layout torch.sparse_coo"),
], ids=["float64", "float16", "strided view", "transposed view", "sparse"])
def test_openblas_checks_every_operand_before_calling_c(monkeypatch, which, wrong, expected):
    # float64 operands once came back off by 1.4e306 without an error
    monkeypatch.setenv("INERTIA_GEMM", "openblas")
    operands = _operands()
    before = operands[2].clone()
    operands[which] = wrong(operands[which])
    name = ("a", "b", "out")[which]
    with pytest.raises(ValueError, match=f"needs contiguous float32 CPU tensors.*; {name} {expected}") as info:
        gemm.BatchedGemm()(*operands)
    assert "\n" not in str(info.value)
    if which != 2:
        assert torch.equal(operands[2], before)


@needs_openblas
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("which", range(3))
def test_openblas_refuses_a_cuda_tensor(monkeypatch, which):
    monkeypatch.setenv("INERTIA_GEMM", "openblas")
    operands = _operands()
    operands[which] = operands[which].cuda()
    with pytest.raises(ValueError, match=f"{('a', 'b', 'out')[which]} is torch.float32 on cuda"):
        gemm.BatchedGemm()(*operands)


def test_without_openblas_installed_the_products_are_torchs(monkeypatch):
    real_find_spec = gemm.importlib.util.find_spec
    monkeypatch.setattr(gemm.importlib.util, "find_spec",
                        lambda name, *args: None if name == "scipy_openblas32" else real_find_spec(name, *args))
    assert gemm._openblas.__wrapped__() is None
    monkeypatch.setattr(gemm, "_openblas", gemm._openblas.__wrapped__)
    monkeypatch.setattr(gemm, "_cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.delenv("INERTIA_GEMM", raising=False)
    product = gemm.BatchedGemm("cpu", torch.float32)
    assert product.backend == "torch" and gemm.openblas_core() is None
    a, b, out = _operands()
    torch.testing.assert_close(product(a, b, out).double(), a.double() @ b.double(), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("INERTIA_GEMM", "openblas")
    with pytest.raises(ValueError, match=r"INERTIA_GEMM=openblas needs the scipy-openblas32 package: "
                                           r"pip install 'inertia\[openblas\]'"):
        gemm.BatchedGemm("cpu", torch.float32)


def test_openblas_is_not_loaded_on_an_intel_cpu(monkeypatch):
    monkeypatch.delenv("INERTIA_GEMM", raising=False)
    monkeypatch.setattr(gemm, "_cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(gemm, "openblas_core", lambda: pytest.fail("OpenBLAS loaded on an Intel CPU"))
    assert gemm.BatchedGemm("cpu", torch.float32).backend == "torch"


@needs_openblas
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
