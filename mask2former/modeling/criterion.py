"""Set criterion of Mask2Former: Hungarian matching, then classification and point-sampled mask losses.

Spec: ``shared/specs/mask2former.md`` section 7.
"""
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.utils import comm
from torch import nn

from segcommon.layers.losses import dice_loss, sigmoid_ce_loss

__all__ = ["SetCriterion", "calculate_uncertainty"]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """
    PointRend uncertainty of class-agnostic mask logits: ``u = -|logit|`` (highest at the decision
    boundary, logit 0).

    Args:
        logits: (R, 1, P) logits at sampled points.

    Returns:
        (R, 1, P) uncertainties.
    """
    assert logits.shape[1] == 1, f"expected class-agnostic logits (R, 1, ...), got {tuple(logits.shape)}"
    return -logits.abs()


class SetCriterion(nn.Module):
    """
    Losses of a set-prediction model with masks (DETR / MaskFormer family).

    For each prediction set (the final one and each of ``outputs["aux_outputs"]``):

    1. match queries to targets with ``matcher`` (a new matching per prediction set);
    2. "labels" -> ``loss_ce``: weighted cross-entropy over all B*Q queries; unmatched queries
       have target K ("no object"), whose weight is ``eos_coef``;
    3. "masks" -> ``loss_mask`` (sigmoid CE) and ``loss_dice`` on ``num_points`` points per matched
       mask chosen by uncertainty-based importance sampling, both normalised by ``num_masks``.

    Auxiliary losses carry the suffix ``_i`` (i = index in ``aux_outputs``). The returned losses are
    **unweighted**: the meta-architecture multiplies them by ``weight_dict`` (kept here only so that it
    travels with the criterion, as in the reference).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        eos_coef: float,
        losses: Sequence[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ):
        """
        Args:
            num_classes: K, number of classes without the "no object" class.
            matcher: callable ``(outputs, targets) -> [(pred_idx, tgt_idx)] * B``.
            weight_dict: loss name -> weight, applied by the caller.
            eos_coef: classification weight of the "no object" class.
            losses: subset of ``["labels", "masks"]``.
            num_points: P, points per matched mask for the mask losses.
            oversample_ratio: candidates drawn per kept point (>= 1) for importance sampling.
            importance_sample_ratio: fraction of the P points chosen by uncertainty (in [0, 1]); the
                rest are uniform random.
        """
        super().__init__()
        unknown = sorted(set(losses) - set(self._loss_map()))
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {unknown}; available: {sorted(self._loss_map())}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        # Class weights of the cross-entropy; a buffer so that it follows .to(device) and appears in
        # checkpoints as "criterion.empty_weight", like the reference.
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def _loss_map(self) -> Dict[str, Callable]:
        return {"labels": self.loss_labels, "masks": self.loss_masks}

    # ------------------------------------------------------------------------------------------
    # Individual losses
    # ------------------------------------------------------------------------------------------
    def loss_labels(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        indices: Indices,
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """
        Weighted cross-entropy over all queries::

            y_bq    = label of the matched target, or K if query q of image b is unmatched
            loss_ce = sum_bq w[y_bq] * CE(logits_bq, y_bq) / sum_bq w[y_bq]

        with ``w = empty_weight`` (1 for real classes, ``eos_coef`` for "no object"), i.e. PyTorch's
        weighted-mean reduction. Computed in float32 (AMP-safe). ``num_masks`` is unused.

        Args:
            outputs: needs "pred_logits" (B, Q, K+1).
            targets: B dicts with "labels" (N_b,).
            indices: matching, B pairs (pred_idx, tgt_idx).

        Returns:
            {"loss_ce": 0-dim tensor}
        """
        src_logits = outputs["pred_logits"].float()
        device = src_logits.device
        batch_idx, src_idx = self._get_src_permutation_idx(indices, device)
        target_classes_o = torch.cat(
            [t["labels"][J.to(t["labels"].device)].to(device) for t, (_, J) in zip(targets, indices)]
        )
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
        target_classes[batch_idx, src_idx] = target_classes_o.to(torch.int64)
        # cross_entropy wants the class dimension second: (B, K+1, Q).
        loss_ce = F.cross_entropy(
            src_logits.transpose(1, 2), target_classes, weight=self.empty_weight.to(src_logits)
        )
        return {"loss_ce": loss_ce}

    def loss_masks(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        indices: Indices,
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """
        Sigmoid CE and dice losses of the matched masks on importance-sampled points.

        For each matched pair (prediction at 1/4 resolution, target at the padded input resolution):

        1. without gradients, draw ``int(P * oversample_ratio)`` uniform points, sample the predicted
           logits there (bilinear), keep the ``int(P * importance_sample_ratio)`` with the highest
           uncertainty ``-|logit|`` and add ``P - that`` fresh uniform points (PointRend);
        2. targets ``t`` are sampled **bilinearly** at those points (``align_corners=False``, zero
           padding; soft values near edges), predictions ``x`` likewise but with gradients;
        3. ``loss_mask = sum_i mean_p BCEwithlogits(x_ip, t_ip) / num_masks``,
           ``loss_dice = sum_i [1 - (2 sum_p s_ip t_ip + 1) / (sum_p s_ip + sum_p t_ip + 1)] / num_masks``
           with ``s = sigmoid(x)``.

        Args:
            outputs: needs "pred_masks" (B, Q, Hp, Wp) logits.
            targets: B dicts with "masks" (N_b, H_b, W_b); images of different sizes are zero-padded
                (bottom/right) to a common size, which is a no-op when they are already padded to
                the batch size.
            indices: matching, B pairs (pred_idx, tgt_idx).
            num_masks: normaliser (number of targets averaged over workers, >= 1).

        Returns:
            {"loss_mask": 0-dim tensor, "loss_dice": 0-dim tensor}
        """
        pred_masks = outputs["pred_masks"]
        batch_idx, src_idx = self._get_src_permutation_idx(indices, pred_masks.device)
        src_masks = pred_masks[batch_idx, src_idx]  # (N_m, Hp, Wp)
        if src_masks.shape[0] == 0:
            # No matched mask in the whole batch: zero losses that stay connected to the graph
            # (a sum over an empty tensor), so every parameter still receives a (zero) gradient.
            zero = src_masks.sum()
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        target_masks = self._gather_target_masks(targets, indices).to(src_masks)  # (N_m, Ht, Wt)

        # Normalised coordinates make the two resolutions irrelevant: no upsampling needed.
        src_masks = src_masks[:, None]
        target_masks = target_masks[:, None]

        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                src_masks,
                calculate_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            point_labels = point_sample(target_masks, point_coords, align_corners=False).squeeze(1)

        point_logits = point_sample(src_masks, point_coords, align_corners=False).squeeze(1)

        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    # ------------------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _get_src_permutation_idx(
        indices: Indices, device: torch.device
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(batch_idx, query_idx) of all matched predictions, image after image; each (N_m,)."""
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for (src, _) in indices])
        return batch_idx.to(device), src_idx.to(device)

    @staticmethod
    def _gather_target_masks(targets: List[Dict[str, torch.Tensor]], indices: Indices) -> torch.Tensor:
        """
        Matched target masks in the order of :meth:`_get_src_permutation_idx`: (N_m, H, W), where
        (H, W) is the largest masks size of all images of the batch, matched or not (smaller ones
        are zero-padded bottom/right, padding counting as background as in the reference).
        """
        # The common size is taken over every image, as the reference does, because it sets what
        # the normalised point coordinates mean for the padded masks.
        sizes = [t["masks"].shape[-2:] for t in targets if t["masks"].dim() == 3]
        max_h = max(h for h, _ in sizes)
        max_w = max(w for _, w in sizes)
        picked = [
            t["masks"][J.to(t["masks"].device)] for t, (_, J) in zip(targets, indices) if len(J) > 0
        ]
        padded = []
        for m in picked:
            if m.shape[-2:] != (max_h, max_w):
                out = m.new_zeros((m.shape[0], max_h, max_w))
                out[:, : m.shape[-2], : m.shape[-1]] = m
                m = out
            padded.append(m)
        return torch.cat(padded)

    @staticmethod
    def get_num_masks(targets: List[Dict[str, torch.Tensor]], device: torch.device) -> float:
        """
        Number of target masks per worker: the local count summed over all workers and divided by
        the world size, clamped to >= 1 (so that a batch without targets does not divide by 0).
        Every worker then normalises by the same number, which keeps gradients of the averaged
        model consistent with a single large batch.
        """
        num_masks = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        world_size = comm.get_world_size()
        if world_size > 1:
            torch.distributed.all_reduce(num_masks)
        return torch.clamp(num_masks / world_size, min=1).item()

    def get_loss(
        self,
        loss: str,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        indices: Indices,
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        return self._loss_map()[loss](outputs, targets, indices, num_masks)

    # ------------------------------------------------------------------------------------------
    def forward(
        self, outputs: Dict[str, object], targets: List[Dict[str, torch.Tensor]]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: dict with "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, Hp, Wp) and optionally
                "aux_outputs": a list of dicts with the same two keys (deep supervision).
            targets: B dicts with "labels" (N_b,) int64 and "masks" (N_b, H, W) (bool/uint8/float,
                normally zero-padded to the batch's padded input size).

        Returns:
            Unweighted losses: "loss_ce", "loss_mask", "loss_dice" (for the requested ``losses``)
            and the same names with suffix "_i" for ``aux_outputs[i]``.
        """
        outputs_without_aux = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.matcher(outputs_without_aux, targets)

        # Computed once and shared by all prediction sets.
        num_masks = self.get_num_masks(targets, outputs["pred_logits"].device)

        losses: Dict[str, torch.Tensor] = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs_without_aux, targets, indices, num_masks))

        for i, aux_outputs in enumerate(outputs.get("aux_outputs", [])):
            # Each decoder layer gets its own matching: its predictions can differ from the final ones.
            aux_indices = self.matcher(aux_outputs, targets)
            for loss in self.losses:
                l_dict = self.get_loss(loss, aux_outputs, targets, aux_indices, num_masks)
                losses.update({f"{k}_{i}": v for k, v in l_dict.items()})
        return losses

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, losses={self.losses}, eos_coef={self.eos_coef}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio},\nweight_dict={self.weight_dict}"
        )
