"""CFT's two loss terms: pixel cross-entropy and the category-mask (sigmoid focal + dice) loss."""
from typing import Sequence

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from fvcore.nn import sigmoid_focal_loss
from torch import Tensor

from segcommon.layers import dice_loss

__all__ = ["pixel_cross_entropy", "category_mask_losses", "sum_stage_masks"]


def pixel_cross_entropy(
    logits: Tensor, targets: Tensor, ignore_value: int = 255, avg_non_ignore: bool = False
) -> Tensor:
    """
    Softmax cross-entropy per pixel, ignored pixels contributing 0.

    Args:
        logits: (B, K, H, W), already at the label size.
        targets: (B, H, W) int64 labels, ``ignore_value`` for unlabelled/padded pixels.
        avg_non_ignore: divide the sum by the number of non-ignored pixels (Detectron2's usual
            ``reduction="mean"``); False divides by all B*H*W pixels, as the reference (MMSeg's
            default ``avg_non_ignore=False``), which gives a smaller loss when pixels are ignored.

    Returns:
        0-dim tensor.
    """
    loss = F.cross_entropy(logits, targets, ignore_index=ignore_value, reduction="none")
    if not avg_non_ignore:
        return loss.mean()
    return loss.sum() / (targets != ignore_value).sum().clamp(min=1)


def sum_stage_masks(masks: Sequence[Tensor], size, align_corners: bool = False) -> Tensor:
    """Bilinearly resizes every stage's class-mask logits (B, K, h_i, w_i) to ``size`` and adds
    them: (B, K, *size). No sigmoid before summing (the stages are not supervised individually)."""
    return sum(F.interpolate(m, size=size, mode="bilinear", align_corners=align_corners) for m in masks)


def category_mask_losses(
    mask_logits: Tensor,
    targets: Tensor,
    ignore_value: int = 255,
    alpha: float = 0.25,
    gamma: float = 2.0,
):
    """
    Sigmoid focal and dice losses of the class-mask logits against binary per-class targets, for
    the classes present in each image only (channels of absent classes get no loss).

    For image b, every class c present in ``targets[b]`` (ignore excluded) gives the pair
    (``mask_logits[b, c]``, ``targets[b] == c``). Ignored/padded pixels are *not* excluded: they are
    negatives of every present class and count in every mean and sum (reference behaviour). The focal
    loss is a per-mask mean over pixels, the dice loss uses +1 smoothing
    (:func:`segcommon.layers.dice_loss`). Both are summed over pairs and divided by
    N = number of pairs, averaged over the processes of a distributed run and clamped to >= 1.

    Args:
        mask_logits: (B, K, H, W) logits at the label size.
        targets: (B, H, W) int64 labels.

    Returns:
        (focal, dice): unweighted 0-dim tensors.
    """
    batch_idx, class_idx, target_masks = [], [], []
    for b, t in enumerate(targets):
        classes = t.unique()
        classes = classes[classes != ignore_value]
        batch_idx.append(torch.full_like(classes, b))
        class_idx.append(classes)
        target_masks.append(t[None] == classes[:, None, None])
    batch_idx, class_idx = torch.cat(batch_idx), torch.cat(class_idx)
    target_masks = torch.cat(target_masks).to(mask_logits.dtype)  # (N, H, W)

    num_masks = torch.as_tensor([float(len(class_idx))], device=mask_logits.device)
    world_size = comm.get_world_size()
    if world_size > 1:
        torch.distributed.all_reduce(num_masks)
    num_masks = (num_masks / world_size).clamp(min=1).item()

    logits = mask_logits[batch_idx, class_idx].flatten(1)  # (N, H*W)
    target_masks = target_masks.flatten(1)
    focal = sigmoid_focal_loss(logits, target_masks, alpha=alpha, gamma=gamma, reduction="none")
    # A sum over an empty selection is 0 and keeps the graph, so every parameter still gets a grad.
    focal = focal.mean(1).sum() / num_masks
    dice = dice_loss(logits, target_masks, num_masks)
    return focal, dice
