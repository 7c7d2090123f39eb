"""The compiled CPU path of multi-scale deformable attention (``csrc/ms_deform_attn_cpu.cpp``).

Optional: compiled on first use and cached (:class:`segcommon.layers.CompiledExtension`). When it
cannot be built, :func:`fast_path_available` is False, the log says why once, and
:class:`MSDeformAttn` uses the pure-PyTorch path. Set ``SEGZOO_MSDEFORM_IMPL=pytorch`` to force the
pure-PyTorch path (for comparisons).

Same function, same coordinate convention and same argument shapes as
:func:`ms_deform_attn_core`; forward and backward are equal to it within float rounding.
"""
import os
from typing import Sequence, Union

import torch

from segcommon.layers.compiled import CompiledExtension

__all__ = ["fast_path_available", "load_extension", "ms_deform_attn_fast"]

_EXTENSION = CompiledExtension(
    name="segzoo_ms_deform_attn_cpu",
    source=os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "ms_deform_attn_cpu.cpp"),
    what="Multi-scale deformable attention (pure-PyTorch path otherwise)",
    disable_env="SEGZOO_MSDEFORM_IMPL",
    disable_value="pytorch",
    use_avx2=True,
)


def load_extension(verbose: bool = False):
    """Compiles (or loads the cached build of) the extension; returns it, or None with the reason
    logged once when it cannot be built."""
    return _EXTENSION.load(verbose)


def fast_path_available() -> bool:
    """True when the compiled CPU kernel is (or can be) loaded."""
    return load_extension() is not None


class _MSDeformAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        ext = load_extension()
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_loc, grad_attn = load_extension().backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
        )
        return grad_value, None, None, grad_loc, grad_attn


def _as_long_tensor(x: Union[torch.Tensor, Sequence], shape_hint: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if t.dtype != torch.long:
        raise ValueError(f"{shape_hint} must be int64, got {t.dtype}")
    return t.cpu()


def ms_deform_attn_fast(
    value: torch.Tensor,
    spatial_shapes: Union[torch.Tensor, Sequence[Sequence[int]]],
    level_start_index: Union[torch.Tensor, Sequence[int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """:func:`ms_deform_attn_core` through the compiled CPU kernel (CPU tensors, float32/float64).

    Args and returns as :func:`ms_deform_attn_core`: value (B, S, M, D), spatial_shapes (L, 2),
    level_start_index (L,), sampling_locations (B, Q, M, L, P, 2), attention_weights
    (B, Q, M, L, P) -> (B, Q, M*D).

    Raises:
        RuntimeError: if the extension is not available (check :func:`fast_path_available` first).
    """
    if load_extension() is None:
        raise RuntimeError(f"the compiled multi-scale deformable attention is not available ({_EXTENSION.failure})")
    shapes = _as_long_tensor(spatial_shapes, "spatial_shapes")
    starts = _as_long_tensor(level_start_index, "level_start_index")
    return _MSDeformAttnFunction.apply(value, shapes, starts, sampling_locations, attention_weights)
