"""The Triton LIF scan (sast.kernels.triton_lif) against the plain-autograd reference scan.

Without a GPU the kernels run in Triton's interpreter on CPU tensors: the fixture sets
``TRITON_INTERPRET=1`` for each test, and :func:`sast.kernels.triton_kernels.kernels` jits the
kernels
afresh for that setting, so it does not matter whether Triton was imported before. Where CUDA is
available the compiled kernels are checked as well.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from sast.neuron import lif_scan_reference
from sast.surrogate import RESETS, SPIKE_MODES, Surrogate, get_surrogate

pytest.importorskip("triton", reason="Triton is not installed (pip install 'sast[test]')")

from sast.kernels import triton_lif  # noqa: E402
from sast.kernels.triton_lif import lif_scan_triton, use_triton

SLOPES = {"sigmoid": 5.0, "atan": 2.0, "erf": 3.0}
BETA, THRESHOLD = 0.85, 0.7
SHAPES = [(7, 3, 5), (6, 2, 3, 4)]


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _current(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32,
             device: str = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # mean 0.45 against ϑ = 0.7: about a third of the neurons fire at each step
    return (0.45 + 0.6 * torch.randn(shape, generator=gen)).to(device=device, dtype=dtype)


def _grad(outputs: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """dL/dx for L = Σ ⟨output, upstream⟩ over the outputs that are part of the graph (the
    reference's hard spikes are not)."""
    live = [(o, g) for o, g in outputs if o.requires_grad]
    if not live:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad([o for o, _ in live], x, [g for _, g in live],
                                  retain_graph=True)
    return grad


def _check(sg: Surrogate, mode: str, reset: str, shape: tuple[int, ...], seed: int,
           device: str = "cpu") -> None:
    x = _current(shape, seed, device=device).requires_grad_()
    s, u = lif_scan_triton(x, BETA, THRESHOLD, sg, mode, reset)
    s_ref, u_ref = lif_scan_reference(x, BETA, THRESHOLD, sg, mode, reset=reset)
    assert s.shape == u.shape == x.shape and s.is_contiguous() and u.is_contiguous()
    torch.testing.assert_close(u, u_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
    if mode != "surrogate":
        assert 0 < s.sum() < s.numel()  # neurons fire, and not all of them
    gen = torch.Generator().manual_seed(seed + 1)
    g_s = torch.randn(shape, generator=gen).to(device)
    g_u = torch.randn(shape, generator=gen).to(device)
    # both upstream gradients, then only the spikes', then only the membrane's (the other None)
    for outs, outs_ref in (
        ([(s, g_s), (u, g_u)], [(s_ref, g_s), (u_ref, g_u)]),
        ([(s, g_s)], [(s_ref, g_s)]),
        ([(u, g_u)], [(u_ref, g_u)]),
    ):
        got, want = _grad(outs, x), _grad(outs_ref, x)
        assert torch.count_nonzero(want) > 0 or mode == "hard"
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("mode", SPIKE_MODES)
@pytest.mark.parametrize("family", sorted(SLOPES))
def test_matches_reference(family: str, mode: str, reset: str) -> None:
    sg = get_surrogate(family, SLOPES[family])
    for i, shape in enumerate(SHAPES):
        _check(sg, mode, reset, shape, seed=100 * i + len(family + mode + reset))


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("mode", SPIKE_MODES)
def test_reset_before_the_leak_matches_reference(mode: str) -> None:
    x = _current((9, 5, 6), seed=7).requires_grad_()
    sg = get_surrogate("sigmoid", 4.0)
    s, u = lif_scan_triton(x, BETA, THRESHOLD, sg, mode, "subtract", reset_before_leak=True)
    s_ref, u_ref = lif_scan_reference(x, BETA, THRESHOLD, sg, mode, reset_before_leak=True)
    torch.testing.assert_close(u, u_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(x)
    outs = [(s, g), (u, g)]
    torch.testing.assert_close(_grad(outs, x), _grad([(s_ref, g), (u_ref, g)], x),
                               rtol=1e-5, atol=1e-5)
    _, u_after = lif_scan_reference(x, BETA, THRESHOLD, sg, mode)
    assert not torch.allclose(u_ref, u_after)


@pytest.mark.usefixtures("interpret")
def test_atan_surrogate_over_a_wide_range() -> None:
    # the kernel's own arctan (Cephes' range reduction and polynomial): x from ±1e−6 to ±1e6
    x = torch.logspace(-6, 6, 400)
    x = torch.cat([-x.flip(0), torch.zeros(1), x])
    s, u = lif_scan_triton((x + 1.0).reshape(1, 1, -1), 0.9, 1.0, "atan", "surrogate")
    want = 0.5 + torch.atan(5.0 * (u.double() - 1.0)) / torch.pi
    torch.testing.assert_close(s.double(), want.reshape(s.shape), rtol=0, atol=3e-7)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype: torch.dtype) -> None:
    x = _current((7, 3, 5), 7, dtype).requires_grad_()
    s, u = lif_scan_triton(x, BETA, THRESHOLD, "erf", "ste", "zero")
    assert s.dtype == u.dtype == dtype
    # the state stays float32 between steps: the outputs are the float32 scan, rounded once
    s_ref, u_ref = lif_scan_reference(x.float(), BETA, THRESHOLD, "erf", "ste", reset="zero")
    assert torch.equal(s, s_ref.to(dtype))
    if dtype == torch.float16:
        assert torch.equal(u, u_ref.to(dtype))
    else:  # the interpreter truncates float32 to bfloat16 where CUDA rounds to nearest
        torch.testing.assert_close(u, u_ref.to(dtype), rtol=2**-7, atol=0)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    (got,) = torch.autograd.grad(u, x, g.to(dtype))
    (want,) = torch.autograd.grad(u_ref, x, g)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


@pytest.mark.usefixtures("interpret")
def test_memory_layouts() -> None:
    base = _current((5, 2, 3, 4, 4), 11)
    s_ref, u_ref = lif_scan_reference(base, BETA, THRESHOLD, "sigmoid", "surrogate")
    # channels-last per step (as the conv nets run): worked on in place, layout kept
    cl = base.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    s, u = lif_scan_triton(cl, BETA, THRESHOLD, "sigmoid", "surrogate")
    assert s.stride() == cl.stride()
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
    # batch-first storage seen time-first: copied, contiguous outputs
    tb = base.transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    s, u = lif_scan_triton(tb, BETA, THRESHOLD, "sigmoid", "surrogate")
    assert s.is_contiguous()
    torch.testing.assert_close(u, u_ref, rtol=1e-5, atol=1e-5)
    # an expanded (stride-0) upstream gradient, as from .sum()
    (got,) = torch.autograd.grad(s.sum(), tb)
    (want,) = torch.autograd.grad(lif_scan_reference(tb, BETA, THRESHOLD)[0].sum(), tb)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("shape", [(3, 0), (1, 1)])
def test_degenerate_shapes(shape: tuple[int, ...]) -> None:
    x = torch.full(shape, 1.5, requires_grad=True)
    s, u = lif_scan_triton(x, 0.9, 1.0, "sigmoid", "hard")
    s_ref, u_ref = lif_scan_reference(x, 0.9, 1.0, "sigmoid", "hard")
    assert torch.equal(s, s_ref) and torch.equal(u, u_ref)
    (g,) = torch.autograd.grad(u.sum(), x)
    assert torch.equal(g, torch.ones(shape))


@pytest.mark.usefixtures("interpret")
def test_no_time_steps() -> None:
    s, u = lif_scan_triton(torch.zeros(0, 4, requires_grad=True))
    assert s.shape == u.shape == (0, 4)


def test_rejects_what_it_has_no_kernel_for() -> None:
    x = torch.zeros(3, 2)
    with pytest.raises(TypeError, match="float"):
        lif_scan_triton(x.double())
    with pytest.raises(TypeError, match="Python numbers"):
        lif_scan_triton(x, torch.tensor(0.9))

    class Custom(type(get_surrogate("sigmoid"))):
        pass

    with pytest.raises(TypeError, match="built-in"):
        lif_scan_triton(x, surrogate=Custom())
    with pytest.raises(ValueError, match="spike mode"):
        lif_scan_triton(x, mode="soft")


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    sg = get_surrogate("sigmoid")
    x = torch.zeros(3, 2)
    assert not use_triton(x, sg)  # CPU tensors always take the PyTorch scan
    monkeypatch.setenv("SAST_LIF_BACKEND", "torch")
    assert not use_triton(x, sg)
    monkeypatch.setenv("SAST_LIF_BACKEND", "cupy")
    with pytest.raises(ValueError, match="SAST_LIF_BACKEND"):
        use_triton(x, sg)
    monkeypatch.delenv("SAST_LIF_BACKEND")
    assert triton_lif.backend() == "auto" and triton_lif.triton_available()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_compiled_kernels_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from sast.neuron import lif_scan

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = _current((16, 8, 300), 5, device="cuda")
    for family, mode, reset in itertools.product(sorted(SLOPES), SPIKE_MODES, RESETS):
        sg = get_surrogate(family, SLOPES[family])
        _check(sg, mode, reset, (16, 8, 300), seed=5, device="cuda")
        # lif_scan dispatches here on CUDA, and SAST_LIF_BACKEND=torch turns that off
        monkeypatch.delenv("SAST_LIF_BACKEND", raising=False)
        assert use_triton(x, sg)
        s, _ = lif_scan(x, BETA, THRESHOLD, sg, mode, reset=reset)
        monkeypatch.setenv("SAST_LIF_BACKEND", "torch")
        s_torch, _ = lif_scan(x, BETA, THRESHOLD, sg, mode, reset=reset)
        torch.testing.assert_close(s, s_torch, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("dtype", "family", "mode", "reset"),
                         [("fp32", 1, 2, 1), ("bf16", 2, 0, 0)])
def test_kernels_compile_for_a_gpu(monkeypatch: pytest.MonkeyPatch, dtype: str, family: int,
                                   mode: int, reset: int) -> None:
    """Compile both kernels for sm_90 down to a cubin, no GPU needed (Triton ships ptxas): the
    compiled path type-checks, which the interpreter does not show."""
    import triton

    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as exc:
        pytest.skip(f"this Triton's ahead-of-time API differs: {exc}")
    from sast.kernels.triton_kernels import kernels

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    fwd, bwd = kernels()
    ptr, const = f"*{dtype}", "constexpr"
    switches = {"SURROGATE": family, "MODE": mode, "RESET": reset}
    scalars = {"beta": "fp32", "threshold": "fp32", "reset_by": "fp32", "slope": "fp32"}
    signature = {"i_ptr": ptr, "s_ptr": ptr, "u_ptr": ptr, "T": const, "N": "i32", **scalars,
                 **dict.fromkeys(switches, const), "BLOCK": const}
    sources = [ASTSource(fwd, signature, {"T": 16, **switches, "BLOCK": 512})]
    signature = {"gs_ptr": ptr, "gu_ptr": ptr, "u_ptr": ptr, "s_ptr": ptr, "gi_ptr": ptr,
                 "T": const, "N": "i32", "last": "i64", **scalars,
                 **dict.fromkeys(switches, const), "HAS_GS": const, "HAS_GU": const,
                 "BLOCK": const}
    sources.append(ASTSource(bwd, signature, {"T": 16, **switches, "HAS_GS": True,
                                              "HAS_GU": False, "BLOCK": 512}))
    for src in sources:
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": 4, "enable_fp_fusion": False})
        assert "cubin" in compiled.asm and ".local" not in compiled.asm["ptx"]
