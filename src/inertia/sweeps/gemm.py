"""Batched fp32 matrix products for the CPU sweep engine: torch's, or OpenBLAS's AVX-512 kernels.

The batched MLP spends ~85 % of a step in matrix products of about 100 x 100 x 100
per member. torch's CPU build does them with MKL, and MKL runs its AVX2 code on
CPUs that are not Intel's, even where the CPU has AVX-512. On a 2-core AMD EPYC
with AVX-512 (2026-11-30, one thread, 16 members, ``benchmarks/gemm_speed.py``),
torch's ``bmm`` of 100 x 100 x 100 ran at 95-97 GFLOP/s and OpenBLAS's SkylakeX
kernels at 175-238 GFLOP/s; a sweep step took 0.54x the time.

So where OpenBLAS runs AVX-512 kernels on such a CPU, the engine calls it (the
optional ``scipy-openblas32`` wheel, ``pip install 'inertia[openblas]'``, which
``scripts/setup.sh`` installs on such CPUs; through its strided batched GEMM
``cblas_sgemm_batch_strided``), and torch everywhere else, or where the wheel is not
installed. OpenBLAS is loaded only on a CPU that is not Intel's; it picks its
kernels then, by the CPU or as ``OPENBLAS_CORETYPE`` says: a machine that names an
AVX2 core there (``Haswell``) gets torch's products. The choice depends only on the
machine, so a sweep resumed there takes the same path and gives the same bits.
``INERTIA_GEMM=torch`` or ``=openblas`` overrides it. No product reduces across
members, so a member's numbers do not depend on which others share its stack
(tested for both backends). OpenBLAS reads raw pointers: every operand is checked
to be a dense, contiguous float32 CPU tensor before it is called.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@lru_cache(maxsize=1)
def _cpu_vendor() -> str:
    """The CPU's vendor id (Linux; elsewhere empty)."""
    try:
        first_cpu = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in first_cpu.splitlines() if line.startswith("vendor_id")), "")


# OpenBLAS's names for its kernels with AVX-512 (the ``sgemm`` of all three is SkylakeX's)
_AVX512_CORES = {"skylakex", "cooperlake", "sapphirerapids"}


@lru_cache(maxsize=1)
def _openblas():
    """The OpenBLAS library of ``scipy-openblas32`` (its kernels picked for this CPU, or as
    ``OPENBLAS_CORETYPE`` says), or None where it is not installed."""
    spec = importlib.util.find_spec("scipy_openblas32")  # located, not imported: importing it loads it too
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = sorted((Path(spec.submodule_search_locations[0]) / "lib").glob("*scipy_openblas*.[sd][ol]*"))
    try:
        lib = ctypes.CDLL(str(libs[0]))
        gemm = lib.scipy_cblas_sgemm_batch_strided
    except (IndexError, OSError, AttributeError):
        return None
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    gemm.argtypes = [i, i, i, i, i, i, f, p, i, i, p, i, i, f, p, i, i, i]
    gemm.restype = None
    lib.scipy_openblas_get_corename.restype = ctypes.c_char_p
    return lib


_openblas_threads = [0]   # OpenBLAS's thread count is one setting for the whole process


def _match_torch_threads(lib) -> None:
    """OpenBLAS runs with as many threads as torch (one in a sweep's lane)."""
    threads = torch.get_num_threads()
    if threads != _openblas_threads[0]:
        lib.scipy_openblas_set_num_threads(threads)
        _openblas_threads[0] = threads


def openblas_core() -> str | None:
    """The name of the kernels OpenBLAS runs here (e.g. ``SkylakeX``), or None when it is not available."""
    lib = _openblas()
    return None if lib is None else lib.scipy_openblas_get_corename().decode()


def wants_openblas() -> bool:
    """OpenBLAS where it runs AVX-512 kernels and torch's MKL would not (a CPU that is not Intel's).

    ``INERTIA_GEMM=torch`` or ``=openblas`` overrides the choice.
    """
    choice = os.environ.get("INERTIA_GEMM", "auto")
    if choice not in ("auto", "torch", "openblas"):
        raise ValueError(f"INERTIA_GEMM must be auto, torch or openblas, got {choice!r}")
    if choice != "auto":
        return choice == "openblas"
    if not torch.backends.mkl.is_available() or _cpu_vendor() == "GenuineIntel":
        return False  # decided before OpenBLAS is loaded
    core = openblas_core()
    return core is not None and core.lower() in _AVX512_CORES


def backend_for(device: torch.device | str, dtype: torch.dtype) -> str:
    """``"openblas"`` for float32 on the CPU where :func:`wants_openblas`, else ``"torch"``.

    ``INERTIA_GEMM=openblas`` without ``scipy-openblas32`` installed is a ``ValueError`` saying so.
    """
    if torch.device(device).type != "cpu" or dtype != torch.float32 or not wants_openblas():
        return "torch"
    if _openblas() is None:
        raise ValueError("INERTIA_GEMM=openblas needs the scipy-openblas32 package: "
                         "pip install 'inertia[openblas]' (or unset INERTIA_GEMM for torch's products)")
    return "openblas"


def _describe(t: Tensor) -> str:
    if t.layout != torch.strided:
        return f"{t.dtype} on {t.device} with layout {t.layout}"
    return f"{t.dtype} on {t.device}, shape {tuple(t.shape)}, strides {t.stride()}"


def _check_operands(**operands: Tensor) -> None:
    """What OpenBLAS reads through a pointer: dense, contiguous float32 on the CPU; else ``ValueError`` naming it."""
    for name, t in operands.items():
        if t.dtype != torch.float32 or not t.is_cpu or t.layout != torch.strided or not t.is_contiguous():
            raise ValueError(f"BatchedGemm (OpenBLAS) needs contiguous float32 CPU tensors (pass transposes as "
                             f"trans_a/trans_b); {name} is {_describe(t)}")


def _raise_shape_mismatch(a: Tensor, b: Tensor, out: Tensor) -> None:
    raise ValueError(f"shapes do not multiply: {tuple(a.shape)}, {tuple(b.shape)} -> {tuple(out.shape)}")


class BatchedGemm:
    """``out = beta * out + op(a) @ op(b)`` over a leading batch axis (or none), ``op`` an optional transpose.

    ``a``, ``b`` and ``out`` are the stored, contiguous matrices ``[..., rows, cols]``;
    ``trans_a``/``trans_b`` say to use their transposes. A 2-D ``b`` with a 3-D ``out`` is
    shared by every product of the batch (the minibatch all members of a fold see).
    OpenBLAS multiplies each member on its own even then, so that a member's numbers
    do not depend on how many share its stack; torch stacks the members' rows into one
    product (``[count * m, k] @ op(b)``). One object per engine: it
    decides once between OpenBLAS and torch (:func:`backend_for`); OpenBLAS runs with
    torch's thread count.
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.backend = backend_for(device, dtype)
        self._lib = _openblas() if self.backend == "openblas" else None

    def __call__(self, a: Tensor, b: Tensor, out: Tensor, *, trans_a: bool = False, trans_b: bool = False,
                 beta: float = 0.0) -> Tensor:
        shared_b = b.dim() == 2 and out.dim() == 3
        if self._lib is None:
            op_a = a.transpose(-1, -2) if trans_a else a
            op_b = b.transpose(-1, -2) if trans_b else b
            if shared_b and not trans_a:
                self(a.reshape(-1, a.shape[-1]), b, out.view(-1, out.shape[-1]), trans_b=trans_b, beta=beta)
                return out
            if shared_b:
                op_b = op_b.expand(out.shape[0], *op_b.shape)
            if out.dim() == 2:
                return torch.addmm(out, op_a, op_b, beta=beta, out=out) if beta else torch.mm(op_a, op_b, out=out)
            return torch.baddbmm(out, op_a, op_b, beta=beta, out=out) if beta else torch.bmm(op_a, op_b, out=out)
        _check_operands(a=a, b=b, out=out)
        if out.dim() not in (2, 3) or a.dim() < 2:
            _raise_shape_mismatch(a, b, out)
        m, n = out.shape[-2:]
        k = a.shape[-2] if trans_a else a.shape[-1]
        count = out.shape[0] if out.dim() == 3 else 1
        if (a.shape[-2:] != ((k, m) if trans_a else (m, k)) or b.shape[-2:] != ((n, k) if trans_b else (k, n))
                or a.numel() != count * m * k or b.numel() != (1 if shared_b else count) * k * n):
            _raise_shape_mismatch(a, b, out)
        _match_torch_threads(self._lib)
        self._lib.scipy_cblas_sgemm_batch_strided(
            _ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m, n, k, 1.0,
            a.data_ptr(), a.shape[-1], m * k, b.data_ptr(), b.shape[-1], 0 if shared_b else k * n, beta,
            out.data_ptr(), n, m * n, count)
        return out
