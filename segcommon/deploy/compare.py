"""Agreement between two predictions of one image (e.g. PyTorch and onnxruntime): the fraction of
pixels on which their final masks agree."""
from typing import Dict, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["final_masks", "mask_agreement", "match_detections"]


def final_masks(result: Dict) -> torch.Tensor:
    """The final per-pixel output of a result dict, as an integer or boolean tensor:
    the panoptic id map (H, W), else the instance masks (N, H, W), else the semantic argmax (H, W)."""
    if "panoptic_seg" in result:
        return result["panoptic_seg"][0].cpu()
    if "instances" in result:
        masks = result["instances"].pred_masks.cpu()
        return masks > 0.5 if masks.dtype.is_floating_point else masks.bool()
    if "sem_seg" in result:
        return result["sem_seg"].argmax(0).cpu()
    raise KeyError(f"no panoptic_seg / instances / sem_seg in {sorted(result)}")


def mask_agreement(a: Dict, b: Dict) -> float:
    """Fraction of equal entries of :func:`final_masks` of ``a`` and ``b``.

    Instance masks are first matched one to one by IoU (Hungarian matching; the smaller set is padded
    with empty masks), so that two instances whose near-equal scores swap places between runtimes,
    or a different number of kept instances, count only the pixels that really differ.
    """
    ma, mb = final_masks(a), final_masks(b)
    if ma.dim() == 3 or mb.dim() == 3:
        if ma.dim() != 3 or mb.dim() != 3 or ma.shape[1:] != mb.shape[1:]:
            raise ValueError(f"instance masks of different sizes: {tuple(ma.shape)} vs {tuple(mb.shape)}")
        ma, mb = _matched(ma, mb)
    elif ma.shape != mb.shape:
        raise ValueError(f"final masks of different sizes: {tuple(ma.shape)} vs {tuple(mb.shape)}")
    if ma.numel() == 0:
        return 1.0
    return float((ma == mb).float().mean())


def _matched(ma: torch.Tensor, mb: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(Na, H, W), (Nb, H, W) bool -> both (N, H, W), N = max(Na, Nb), with ``mb`` reordered to match ``ma``."""
    n = max(len(ma), len(mb))
    pad = lambda m: torch.cat([m, m.new_zeros((n - len(m), *m.shape[1:]))])  # noqa: E731
    ma, mb = pad(ma.bool()), pad(mb.bool())
    if n == 0:
        return ma, mb
    fa, fb = ma.flatten(1).float(), mb.flatten(1).float()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))  # two empty masks agree
    rows, cols = linear_sum_assignment(-iou.numpy())
    return ma[torch.as_tensor(rows)], mb[torch.as_tensor(cols)]


def match_detections(
    boxes_a: np.ndarray, classes_a: np.ndarray, boxes_b: np.ndarray, classes_b: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """One-to-one pairing of two runs' detections, to compare their raw outputs when near-equal scores
    put them in different orders: same class first, then the smallest L1 distance between boxes.

    Args:
        boxes_a, boxes_b: (Na, 4), (Nb, 4); classes_a, classes_b: (Na,), (Nb,).

    Returns:
        index arrays ``(ia, ib)`` of length min(Na, Nb), ``ib`` in increasing order.
    """
    cost = np.abs(boxes_a[:, None, :] - boxes_b[None, :, :]).sum(-1)
    cost = cost + (classes_a[:, None] != classes_b[None, :]) * (cost.max(initial=0.0) + 1.0) * 4
    rows, cols = linear_sum_assignment(cost)
    order = np.argsort(cols)
    return rows[order], cols[order]
