"""Bipartite (Hungarian) matching between Mask2Former's queries and the ground-truth segments.

Spec: ``shared/specs/mask2former.md`` section 6.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment
from torch import nn

from segcommon.layers.losses import batch_dice_loss, batch_sigmoid_ce_loss

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """
    One-to-one assignment of predictions to targets, per image, minimising::

        C[q, n] = w_class * cost_class[q, n] + w_mask * cost_mask[q, n] + w_dice * cost_dice[q, n]

    with

    * ``cost_class[q, n] = -softmax(pred_logits[q])[label_n]`` (a plain negative probability: the
      "1 -" of ``1 - p`` is a constant and does not change the assignment);
    * ``cost_mask[q, n]`` = mean binary cross-entropy with logits between prediction q and target n
      (:func:`batch_sigmoid_ce_loss`);
    * ``cost_dice[q, n]`` = sigmoid dice loss with +1 smoothing (:func:`batch_dice_loss`);

    both mask costs being evaluated on ``num_points`` random points, uniform in the unit square and
    shared by all predictions and targets of an image (so the costs of different pairs are
    comparable and the costs are computed with two matrix products instead of dense masks).
    Predictions (1/4 resolution) and targets (full padded resolution) are sampled bilinearly at the
    same normalised coordinates (``grid_sample``, ``align_corners=False``, zero padding), so the two
    resolutions need not match.

    There are usually more queries than targets: ``min(Q, N)`` pairs are returned and the other
    queries are left unmatched ("no object").
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 0,
    ):
        """
        Args:
            cost_class: weight of the classification cost.
            cost_mask: weight of the point-sampled sigmoid cross-entropy cost.
            cost_dice: weight of the point-sampled dice cost.
            num_points: number of points P sampled per image for the mask costs.
        """
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all cost weights are 0, the matching would be arbitrary")
        if num_points <= 0 and (cost_mask != 0 or cost_dice != 0):
            raise ValueError(f"HungarianMatcher: num_points must be > 0 for mask costs, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def compute_costs(
        self,
        pred_logits: torch.Tensor,
        tgt_labels: torch.Tensor,
        pred_point_logits: torch.Tensor,
        tgt_point_labels: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """
        Cost matrices of one image from already point-sampled masks.

        Args:
            pred_logits: (Q, K+1) class logits.
            tgt_labels: (N,) int64 labels in [0, K).
            pred_point_logits: (Q, P) mask logits at the sampled points.
            tgt_point_labels: (N, P) target values at the same points, in [0, 1].

        Returns:
            dict with float32 (Q, N) tensors "cost_class", "cost_mask", "cost_dice" (unweighted) and
            "C" (the weighted sum that is minimised).
        """
        device_type = pred_point_logits.device.type
        # The mask costs are sums over thousands of points: under AMP, fp16 would lose precision
        # (and can overflow), so they are computed in float32 with autocast disabled.
        with torch.autocast(device_type=device_type, enabled=False):
            # Under autocast softmax already runs in float32; casting first gives the same result
            # for half-precision inputs that reach here outside autocast.
            prob = pred_logits.float().softmax(-1)
            cost_class = -prob[:, tgt_labels]
            out_points = pred_point_logits.float()
            tgt_points = tgt_point_labels.float()
            cost_mask = batch_sigmoid_ce_loss(out_points, tgt_points)
            cost_dice = batch_dice_loss(out_points, tgt_points)
            # Terms with a zero weight are left out rather than multiplied by 0, so that a disabled
            # cost cannot inject NaN (e.g. 0 * NaN) into the matching.
            C = torch.zeros_like(cost_class)
            for weight, cost in (
                (self.cost_mask, cost_mask),
                (self.cost_class, cost_class),
                (self.cost_dice, cost_dice),
            ):
                if weight != 0:
                    C = C + weight * cost
        return {"cost_class": cost_class, "cost_mask": cost_mask, "cost_dice": cost_dice, "C": C}

    @torch.no_grad()
    def image_cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        tgt_labels: torch.Tensor,
        tgt_masks: torch.Tensor,
    ) -> torch.Tensor:
        """
        Weighted cost matrix of one image; draws this image's random points (global torch RNG).

        Args:
            pred_logits: (Q, K+1) class logits.
            pred_masks: (Q, Hp, Wp) mask logits.
            tgt_labels: (N,) labels.
            tgt_masks: (N, Ht, Wt) bool / uint8 / float masks.

        Returns:
            (Q, N) float32 cost matrix ``C``.
        """
        # Targets take the predictions' dtype (and device) so that both go through the same
        # grid_sample; bool/uint8 masks become 0/1 floats.
        tgt_masks = tgt_masks.to(pred_masks)
        point_coords = torch.rand(1, self.num_points, 2, device=pred_masks.device)
        tgt_points = point_sample(
            tgt_masks[:, None], point_coords.expand(tgt_masks.shape[0], -1, -1), align_corners=False
        ).squeeze(1)
        pred_points = point_sample(
            pred_masks[:, None], point_coords.expand(pred_masks.shape[0], -1, -1), align_corners=False
        ).squeeze(1)
        return self.compute_costs(pred_logits, tgt_labels, pred_points, tgt_points)["C"]

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: dict with
                "pred_logits": (B, Q, K+1) class logits,
                "pred_masks": (B, Q, Hp, Wp) mask logits;
                other keys (e.g. "aux_outputs") are ignored.
            targets: B dicts with
                "labels": (N_b,) int64 class ids,
                "masks": (N_b, Ht, Wt) masks (any resolution; normally the padded input size).

        Returns:
            B pairs ``(pred_idx, tgt_idx)`` of int64 CPU tensors of length ``min(Q, N_b)``, sorted by
            prediction index; prediction ``pred_idx[i]`` is matched to target ``tgt_idx[i]``.
            Images without targets give two empty tensors.
        """
        pred_logits = outputs["pred_logits"]
        pred_masks = outputs["pred_masks"]
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {pred_logits.shape[0]} predictions")

        indices = []
        # One image at a time: the number of targets differs per image, and looping keeps peak
        # memory at one image's (Q + N, P) point samples.
        for b, target in enumerate(targets):
            tgt_labels, tgt_masks = target["labels"], target["masks"]
            if tgt_labels.numel() == 0 and tgt_masks.dim() != 3:
                # Accept a zero-size masks tensor without the (N, H, W) layout (e.g. shape (0,)).
                tgt_masks = tgt_masks.new_zeros((0, 1, 1))
            # Images without targets go through the same path (a (Q, 0) cost matrix, for which the
            # solver returns empty indices) so that every image draws its random points, exactly as
            # the reference does: the RNG stream then does not depend on which images are empty.
            C = self.image_cost_matrix(pred_logits[b], pred_masks[b], tgt_labels, tgt_masks)
            C = C.cpu()
            if not torch.isfinite(C).all():
                raise FloatingPointError(
                    f"HungarianMatcher: non-finite matching cost for image {b} "
                    "(NaN/Inf in pred_logits or pred_masks?)"
                )
            pred_idx, tgt_idx = linear_sum_assignment(C.numpy())
            indices.append(
                (torch.as_tensor(pred_idx, dtype=torch.int64), torch.as_tensor(tgt_idx, dtype=torch.int64))
            )
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
            f"num_points={self.num_points}"
        )
