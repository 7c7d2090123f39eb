"""SOTR's losses (``shared/specs/sotr.md`` §10): dice on the dynamic-conv masks of the positive
(cell, instance) pairs, and a sigmoid focal loss on the class grids."""
from typing import Dict, List, Sequence

import torch
from fvcore.nn import sigmoid_focal_loss_jit
from torch.nn import functional as F

from .targets import LevelTargets

__all__ = ["sotr_dice_loss", "dynamic_mask_logits", "sotr_losses"]


def sotr_dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss with squared sums (SOLO/SOTR form; not the +1-smoothed dice of
    ``segcommon.layers.losses``)::

        loss_i = 1 - 2 sum(p t) / ((sum p^2 + 0.001) + (sum t^2 + 0.001))

    Args:
        probs: (P, ...) probabilities.
        targets: (P, ...) binary targets.

    Returns:
        (P,) losses.
    """
    p = probs.flatten(1)
    t = targets.flatten(1).float()
    a = (p * t).sum(1)
    b = (p * p).sum(1) + 0.001
    c = (t * t).sum(1) + 0.001
    return 1 - 2 * a / (b + c)


def dynamic_mask_logits(kernels: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """1x1 dynamic convolution without bias.

    Args:
        kernels: (P, D) one kernel per mask.
        mask_features: (D, H, W) one image's mask features.

    Returns:
        (P, H, W) mask logits.
    """
    # A conv (not a matmul) as the reference, so thresholded masks match it bit for bit.
    return F.conv2d(mask_features[None], kernels[:, :, None, None])[0]


def sotr_losses(
    cate_preds: Sequence[torch.Tensor],
    kernel_preds: Sequence[torch.Tensor],
    mask_features: torch.Tensor,
    targets: Sequence[Sequence[LevelTargets]],
    *,
    num_classes: int,
    focal_alpha: float,
    focal_gamma: float,
    focal_weight: float,
    dice_weight: float,
) -> Dict[str, torch.Tensor]:
    """
    Args:
        cate_preds: per level, (N, K, S, S) class logits.
        kernel_preds: per level, (N, D, S, S) kernels.
        mask_features: (N, D, H_pad/4, W_pad/4).
        targets: ``targets[image][level]`` from :func:`~.targets.build_targets`.
        num_classes: K.
        focal_alpha, focal_gamma: sigmoid focal loss parameters.
        focal_weight, dice_weight: loss weights.

    Returns:
        ``{"loss_ins": dice_weight * mean dice over all (cell, instance) pairs,
        "loss_cate": focal_weight * focal sum / (positive cells + 1)}``. Both are local to this
        process (no cross-GPU normalisation, as the reference).
    """
    # Masks of the positive pairs, level-major then image (the pairing order; the mean ignores it).
    dice: List[torch.Tensor] = []
    for level, kernel_level in enumerate(kernel_preds):
        for n, t in enumerate(tgt[level] for tgt in targets):
            if t.grid_order.numel() == 0:
                continue
            kernels = kernel_level[n].flatten(1)[:, t.grid_order].t()  # (P, D)
            logits = dynamic_mask_logits(kernels, mask_features[n])
            dice.append(sotr_dice_loss(logits.sigmoid(), t.mask_targets))
    if dice:
        loss_ins = torch.cat(dice).mean() * dice_weight
    else:
        # No positive pair in the batch (the reference crashes here). A zero that still touches
        # every kernel and the mask features, so all parameters get a (zero) gradient and DDP does
        # not wait for missing ones.
        loss_ins = 0.0 * (sum(k.sum() for k in kernel_preds) + mask_features.sum())

    # Classification: level-major, then image, then cells row-major.
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(-1, num_classes) for c in cate_preds])
    labels = torch.cat([tgt[level].cate_label.flatten() for level in range(len(cate_preds)) for tgt in targets])
    num_pos = sum(tgt[level].positive.sum() for level in range(len(cate_preds)) for tgt in targets)
    onehot = torch.zeros_like(logits)
    fg = labels != num_classes
    onehot[fg.nonzero().squeeze(1), labels[fg]] = 1
    loss_cate = (
        focal_weight
        * sigmoid_focal_loss_jit(logits, onehot, alpha=focal_alpha, gamma=focal_gamma, reduction="sum")
        / (num_pos + 1)
    )
    return {"loss_ins": loss_ins, "loss_cate": loss_cate}
