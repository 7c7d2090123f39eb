"""Agreement between two predictions of one image (e.g. PyTorch and onnxruntime): the fraction of
pixels on which their final masks agree."""
from typing import Dict

import torch

__all__ = ["final_masks", "mask_agreement"]


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
    """Fraction of equal entries of :func:`final_masks` of ``a`` and ``b``. Instance sets of different
    sizes are compared as label maps (instance i painted with i + 1 in score order, later over earlier)."""
    ma, mb = final_masks(a), final_masks(b)
    if ma.shape != mb.shape:
        if ma.dim() != 3 or mb.dim() != 3 or ma.shape[1:] != mb.shape[1:]:
            raise ValueError(f"final masks of different sizes: {tuple(ma.shape)} vs {tuple(mb.shape)}")
        ma, mb = _paint(ma), _paint(mb)
    if ma.numel() == 0:
        return 1.0
    return float((ma == mb).float().mean())


def _paint(masks: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(masks.shape[1:], dtype=torch.int64)
    for i, m in enumerate(masks):
        out[m] = i + 1
    return out
