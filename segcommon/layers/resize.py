"""Bilinear resizing that skips maps already at the target size, without fixing sizes under export."""
from typing import Sequence

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.nn import functional as F

__all__ = ["resize_bilinear"]


def resize_bilinear(x: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """``x`` (..., h, w) resized to ``size`` (H, W) bilinearly; ``x`` itself when already that size.

    Resizing to the same size is the identity for both ``align_corners`` settings, so the shortcut
    changes no value. With symbolic sizes (``torch.export`` with a dynamic height and width) the test
    is made only when it holds for every size, so the export adds no guard that would fix the image
    size; otherwise the map is interpolated.
    """
    if _known_equal(x.shape[-2], size[0]) and _known_equal(x.shape[-1], size[1]):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def _known_equal(a, b) -> bool:
    if isinstance(a, torch.SymInt) or isinstance(b, torch.SymInt):
        return statically_known_true(a == b)
    return bool(a == b)  # ints, or sizes recorded as tensors by the TorchScript tracer (fixed size)
