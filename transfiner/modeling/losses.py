"""Mask Transfiner's auxiliary and refinement losses (``shared/specs/transfiner.md`` §10).

The coarse ``loss_mask`` is Detectron2's own ``mask_rcnn_loss`` (BCE-with-logits of the GT-class
28x28 logits, averaged over all elements, plus the ``mask_rcnn/*`` training events).
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from segcommon.layers.losses import dice_loss, sigmoid_ce_loss

__all__ = ["incoherence_loss", "refinement_loss", "semantic_loss", "boundary_loss"]


def incoherence_loss(logits: Tensor, probs: Tensor, targets: Tensor) -> Tensor:
    """Dice + probability-space BCE of the incoherence map (unweighted).

    Dice per RoI is ``1 - (2 sum p g + 1) / (sum p + sum g + 1)`` summed over RoIs and divided by N;
    BCE is ``F.binary_cross_entropy`` on the probabilities (the reference's op, log clamped at -100),
    averaged over all elements. Computed in float32 with autocast disabled: the probability-space BCE
    is refused under CUDA autocast (§18.11); the value is the same.

    Args:
        logits: (N, R, R) incoherence logits (dice goes through their sigmoid, i.e. ``probs``).
        probs: (N, R, R) incoherence probabilities ``sigmoid(logits)``.
        targets: (N, R, R) 0/1 incoherence GT.
    """
    with torch.autocast(device_type=probs.device.type, enabled=False):
        logits, probs, targets = logits.float(), probs.float(), targets.float()
        return dice_loss(logits, targets, max(len(probs), 1)) + F.binary_cross_entropy(probs, targets)


def refinement_loss(probs: Tensor, labels: Tensor) -> Tensor:
    """L1 between refined probabilities and binary labels, averaged over all tokens (context tokens
    included)."""
    return F.l1_loss(probs, labels.to(probs.dtype))


def semantic_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """BCE-with-logits of the (B, 1, Hs, Ws) semantic logits, averaged over all elements."""
    return sigmoid_ce_loss(logits, targets.to(logits.dtype), max(len(logits), 1))


def boundary_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """BCE-with-logits of the (N, R, R) boundary logits, averaged over all elements. (The reference
    adds the same BCE twice and halves the sum: exactly one BCE.)"""
    return sigmoid_ce_loss(logits, targets.to(logits.dtype), max(len(logits), 1))
