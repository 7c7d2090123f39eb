"""Model-agnostic binary mask losses and their pairwise (matching-cost) variants.

Conventions used by every function here:

* ``inputs`` are **logits** (no sigmoid applied yet); ``targets`` are in ``[0, 1]`` and may be soft
  (e.g. targets bilinearly sampled at points close to a mask boundary).
* A "mask" is one row after flattening all trailing dimensions, so ``(N, P)`` point samples and
  ``(N, H, W)`` dense masks are both accepted by the per-mask losses.
* The per-mask losses return ``sum over masks / num_masks`` (a 0-dim tensor). ``num_masks`` is passed
  in rather than derived from ``N`` because DETR-style criteria normalise by the number of target
  masks averaged over all workers, which differs from the local ``N``.

For a focal loss use :func:`fvcore.nn.sigmoid_focal_loss`; it is not duplicated here.
"""
from typing import Union

import torch
import torch.nn.functional as F

__all__ = ["dice_loss", "sigmoid_ce_loss", "batch_dice_loss", "batch_sigmoid_ce_loss"]


def dice_loss(
    inputs: torch.Tensor, targets: torch.Tensor, num_masks: Union[float, torch.Tensor]
) -> torch.Tensor:
    """
    Sigmoid dice loss with +1 smoothing, summed over masks and divided by ``num_masks``.

    With ``p = sigmoid(x)`` flattened per mask::

        loss_i = 1 - (2 * sum_p p_i * t_i + 1) / (sum_p p_i + sum_p t_i + 1)
        loss   = sum_i loss_i / num_masks

    The +1 in numerator and denominator keeps the loss defined (= 0) for an empty target that is
    predicted empty.

    Args:
        inputs: (N, ...) logits.
        targets: (N, ...) targets in [0, 1], same number of elements per row as ``inputs``.
        num_masks: normaliser (Python float or 0-dim tensor).

    Returns:
        0-dim tensor.
    """
    probs = inputs.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def sigmoid_ce_loss(
    inputs: torch.Tensor, targets: torch.Tensor, num_masks: Union[float, torch.Tensor]
) -> torch.Tensor:
    """
    Binary cross-entropy with logits, averaged over the elements of each mask, summed over masks and
    divided by ``num_masks``::

        bce(x, t) = -[t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))]
        loss      = sum_i mean_p bce(x_ip, t_ip) / num_masks

    Args:
        inputs: (N, ...) logits.
        targets: (N, ...) targets in [0, 1], same shape as ``inputs``.
        num_masks: normaliser (Python float or 0-dim tensor).

    Returns:
        0-dim tensor.
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.flatten(1).mean(1).sum() / num_masks


def batch_dice_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Pairwise sigmoid dice loss (a matching cost): for every prediction ``n`` and target ``m``::

        cost[n, m] = 1 - (2 * sum_p sigmoid(x_np) * t_mp + 1)
                         / (sum_p sigmoid(x_np) + sum_p t_mp + 1)

    Equal to ``dice_loss(inputs[n:n+1], targets[m:m+1], 1)`` for every pair, computed with one matrix
    product instead of N x M calls.

    Args:
        inputs: (N, P) logits.
        targets: (M, P) targets in [0, 1].

    Returns:
        (N, M) tensor.
    """
    probs = inputs.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def batch_sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Pairwise mean binary cross-entropy with logits (a matching cost)::

        cost[n, m] = (1/P) * sum_p [ bce(x_np, 1) * t_mp + bce(x_np, 0) * (1 - t_mp) ]

    which equals ``mean_p bce(x_np, t_mp)`` because bce is linear in its target. Written as two
    matrix products so that no (N, M, P) tensor is built.

    Args:
        inputs: (N, P) logits.
        targets: (M, P) targets in [0, 1].

    Returns:
        (N, M) tensor.
    """
    num_points = inputs.shape[1]
    # bce(x, 1) = softplus(-x) and bce(x, 0) = softplus(x); going through the library function keeps
    # its numerically stable formulation for large |x|.
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    loss = pos @ targets.t() + neg @ (1 - targets).t()
    return loss / num_points
