"""The compiled CPU kernel of multi-scale deformable attention equals the pure-PyTorch path,
forward and backward, and is what MSDeformAttn runs on the CPU in eager mode."""
import shutil

import pytest
import torch

from mask2former.modeling.pixel_decoder import ms_deform_attn as msda
from mask2former.modeling.pixel_decoder.ms_deform_attn import MSDeformAttn, ms_deform_attn_core
from mask2former.modeling.pixel_decoder.ms_deform_attn_fast import fast_path_available, ms_deform_attn_fast

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler to build the kernel"
)

LEVELS = [(7, 5), (4, 3), (3, 1)]  # odd sizes, a one-pixel-wide level


def inputs(dtype, b=2, q=11, m=3, d=5, p=4, spread=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(LEVELS)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(b, s, m, d, generator=g, dtype=dtype)
    # locations up to `spread` outside [0, 1] on each side: border and fully outside cases
    loc = torch.rand(b, q, m, len(LEVELS), p, 2, generator=g, dtype=dtype) * (1 + 2 * spread) - spread
    attn = torch.rand(b, q, m, len(LEVELS), p, generator=g, dtype=dtype)
    return value, shapes, starts, loc, attn


def test_extension_builds():
    assert fast_path_available()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_forward_and_backward_equal_pure_pytorch(dtype, tol):
    value, shapes, starts, loc, attn = inputs(dtype)
    leaves = [t.requires_grad_() for t in (value, loc, attn)]
    ref = ms_deform_attn_core(value, shapes, starts, loc, attn)
    fast = ms_deform_attn_fast(value, shapes, starts, loc, attn)
    assert fast.shape == ref.shape == (2, 11, 15)
    torch.testing.assert_close(fast, ref, atol=tol, rtol=tol)
    grad = torch.randn_like(ref)
    for gf, gr in zip(torch.autograd.grad(fast, leaves, grad), torch.autograd.grad(ref, leaves, grad)):
        torch.testing.assert_close(gf, gr, atol=tol * 10, rtol=tol * 10)


def test_gradcheck_float64():
    value, shapes, starts, loc, attn = inputs(torch.float64, b=1, q=3, m=2, d=2, p=2, spread=0.1, seed=1)
    # keep locations away from pixel centres, where bilinear interpolation has kinks
    fn = lambda v, lo, a: ms_deform_attn_fast(v, shapes, starts, lo, a)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (value.requires_grad_(), loc.requires_grad_(), attn.requires_grad_()))


def test_points_outside_every_level_read_zero():
    value, shapes, starts, loc, attn = inputs(torch.float32)
    loc = loc.clone()
    loc[..., 0] = 1.0 + 1.0 / 0.9  # beyond the right edge of every level (at least one pixel out)
    assert ms_deform_attn_fast(value, shapes, starts, loc, attn).abs().max() == 0


def test_module_uses_the_fast_path_on_cpu_and_pure_pytorch_when_tracing(monkeypatch):
    calls = []
    real = msda.ms_deform_attn_fast
    monkeypatch.setattr(msda, "ms_deform_attn_fast", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2).eval()
    shapes = torch.tensor(LEVELS)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    query, value = torch.randn(1, s, 16), torch.randn(1, s, 16)
    ref_points = torch.rand(1, s, 3, 2)
    out = attn(query, ref_points, value, shapes, starts)
    assert calls == [1]
    class WithShapes(torch.nn.Module):  # trace a module, so parameters stay parameters
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, q, r, v):
            return self.attn(q, r, v, shapes, starts)

    with torch.no_grad():
        traced = torch.jit.trace(WithShapes(), (query, ref_points, value), check_trace=False)
    assert calls == [1], "tracing must record the pure-PyTorch operators"
    with torch.no_grad():
        torch.testing.assert_close(traced(query, ref_points, value), out, atol=1e-5, rtol=1e-5)
