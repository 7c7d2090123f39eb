"""Suppression steps of SOTR's inference (SOLOv2 style): point NMS on the class grids, matrix NMS
(score decay) and the sequential mask NMS alternative. ``shared/specs/sotr.md`` §11 steps 0 and 8."""
import torch
from torch.nn import functional as F

__all__ = ["point_nms", "matrix_nms", "mask_nms"]


def point_nms(heat: torch.Tensor) -> torch.Tensor:
    """Zeroes every cell that is lower than its upper, left or upper-left neighbour (per class).

    A 2x2 max-pool with stride 1 and padding 1, cropped to S x S, sees exactly a cell and those three
    neighbours; ties keep the cell, and out-of-range neighbours are padding (ignored).

    Args:
        heat: (N, K, S, S) class probabilities.

    Returns:
        (N, K, S, S): ``heat`` where it is a local maximum, else 0.
    """
    hmax = F.max_pool2d(heat, kernel_size=2, stride=1, padding=1)[:, :, :-1, :-1]
    return heat * (hmax == heat).to(heat.dtype)


def matrix_nms(
    labels: torch.Tensor,
    masks: torch.Tensor,
    areas: torch.Tensor,
    scores: torch.Tensor,
    sigma: float = 2.0,
    kernel: str = "gaussian",
) -> torch.Tensor:
    """Matrix NMS (SOLOv2): decays each score by its overlap with higher-scored same-class masks.

    Args:
        labels: (n,) class ids, candidates sorted by descending score.
        masks: (n, H, W) binary masks.
        areas: (n,) float mask areas (``masks.sum((1, 2))``).
        scores: (n,) scores, sorted descending.
        sigma: Gaussian kernel coefficient; it *multiplies* IoU**2 (``exp(-sigma * iou**2)``).
        kernel: "gaussian" or "linear".

    Returns:
        (n,) decayed scores.
    """
    n = labels.numel()
    if n == 0:
        return scores.new_zeros((0,))
    flat = masks.reshape(n, -1).float()
    inter = flat @ flat.t()
    areas_x = areas.expand(n, n)
    # IoU with every higher-scored candidate i < j (upper triangle), same class only.
    iou = (inter / (areas_x + areas_x.t() - inter)).triu(diagonal=1)
    labels_x = labels.expand(n, n)
    same_class = (labels_x == labels_x.t()).float().triu(diagonal=1)
    decay_iou = iou * same_class
    # compensate[i]: the largest overlap of candidate i itself with a higher-scored one; broadcast
    # along rows, so row i of the decay matrix is normalised by how much i was itself suppressed.
    compensate = decay_iou.max(0)[0].expand(n, n).t()
    if kernel == "linear":
        # Clamp: two identical same-class masks give compensate == 1 (the reference divides by 0).
        decay = ((1 - decay_iou) / (1 - compensate).clamp(min=1e-6)).min(0)[0]
    elif kernel == "gaussian":
        decay = (torch.exp(-sigma * decay_iou**2) / torch.exp(-sigma * compensate**2)).min(0)[0]
    else:
        raise ValueError(f"unknown matrix-NMS kernel {kernel!r} (expected 'gaussian' or 'linear')")
    return scores * decay


def mask_nms(
    labels: torch.Tensor, masks: torch.Tensor, areas: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy same-class mask NMS over candidates sorted by descending score.

    Args:
        labels, masks, areas, scores: as in :func:`matrix_nms`.
        iou_threshold: a candidate is dropped when its IoU with a kept, higher-scored candidate of
            the same class exceeds this (or when the union is empty).

    Returns:
        (n,) bool keep flags.
    """
    n = scores.numel()
    keep = torch.ones(n, dtype=torch.bool, device=scores.device)
    flat = masks.reshape(n, -1).float()
    inter = flat @ flat.t()
    union = areas[:, None] + areas[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.ones_like(union))
    suppress = (iou > iou_threshold) & (labels[:, None] == labels[None, :])
    for i in range(n - 1):
        if keep[i]:
            keep[i + 1 :] &= ~suppress[i, i + 1 :]
    return keep
