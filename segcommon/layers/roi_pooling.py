"""RoI pooling from a feature pyramid with the level of each box given: the scatter loop of
Detectron2's ``ROIPooler.forward``, for callers that choose the levels themselves (Transfiner's
finer quadtree levels) or must avoid data-dependent branches (export)."""
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["pool_by_level"]


def pool_by_level(level_poolers: Sequence[nn.Module], features: Sequence[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
    """
    Args:
        level_poolers: one RoIAlign per feature level (same output size).
        features: per level, (B, C, H_l, W_l).
        rois: (R, 5) ``(batch index, x0, y0, x1, y1)`` in image pixels.
        levels: (R,) int64 index of the level each RoI reads.

    Returns:
        (R, C, S, S), S the poolers' output size. Levels without RoIs are pooled as empty batches, so
        no branch depends on the data.
    """
    size = level_poolers[0].output_size
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *size))
    for level, (pooler, x) in enumerate(zip(level_poolers, features)):
        inds = torch.nonzero(levels == level)[:, 0]
        out = out.index_put((inds,), pooler(x, rois[inds]))
    return out
