"""Export-friendly inference of Detectron2's two-stage detectors (one image): RPN proposals, RoI
pooling and the Fast R-CNN box predictions.

Detectron2's own inference code branches on tensor values (``if not valid_mask.all()`` in
``find_top_rpn_proposals`` and ``fast_rcnn_inference_single_image``, the finite-box assert of
``Boxes.clip``, the per-class loop of torchvision's ``batched_nms`` on large inputs), which
``torch.export`` cannot capture. The functions here compute the same results with masks instead of
branches: invalid (non-finite) rows are dropped together with the empty boxes, boxes are clipped to an
image size given as a tensor, and NMS per group uses the coordinate offset that torchvision applies
to small inputs. Every count after a filter or NMS is data-dependent, and so is every output size.

All boxes are (R, 4) XYXY in input pixels; ``image_size`` is a (2,) int64 tensor ``(h, w)`` of the
resized image inside the padded network input.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.modeling.proposal_generator import RPN
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Boxes
from torch import Tensor, nn
from torchvision.ops import nms

from segcommon.layers.roi_pooling import pool_by_level

__all__ = [
    "clip_boxes",
    "batched_nms",
    "first_rows",
    "pooler_levels",
    "pool_rois",
    "with_spare_row",
    "rpn_proposals",
    "detect_boxes",
    "mask_rcnn_probs",
]


def clip_boxes(boxes: Tensor, image_size: Tensor) -> Tensor:
    """``Boxes.clip`` with a tensor size: x to [0, w], y to [0, h]. (R, 4) -> (R, 4)."""
    size = image_size.to(boxes.dtype)
    h, w = size[0], size[1]
    zero = boxes.new_zeros(())
    x1 = torch.minimum(torch.maximum(boxes[:, 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[:, 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[:, 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[:, 3], zero), h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def first_rows(x: Tensor, k: int) -> Tensor:
    """``x[:k]`` for an ``x`` of data-dependent length: (R, ...) -> (min(R, k), ...).

    A plain ``x[:k]`` is sized ``k`` by the exporter (it assumes R >= k), and every later use of that
    size (zeros, comparisons) becomes the constant ``k``; the explicit minimum keeps it symbolic.
    """
    return x[: torch.sym_min(x.shape[0], k)]


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group, as torchvision's ``batched_nms`` on small inputs: the boxes of group g
    are shifted by ``g * (max coordinate + 1)`` so that one NMS never compares two groups.

    Args:
        boxes: (R, 4) with non-negative coordinates (clipped boxes).
        scores: (R,); groups: (R,) int64.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    # A zero appended keeps the maximum defined when there is no box (coordinates are >= 0).
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes.dtype) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def with_spare_row(x: Tensor) -> Tensor:
    """``x`` (R, ...) with one zero row appended: (R + 1, ...).

    RoI heads run on R + 1 rows and their outputs are cut back to R. With R = 0 (no proposal, no
    detection) a per-RoI GroupNorm reshapes (0, C, H, W) to (0, G, -1), which onnxruntime rejects as
    ambiguous; the spare row keeps every shape non-empty. Rows never mix in these heads.
    """
    return torch.cat([x, x.new_zeros((1, *x.shape[1:]))])


def pooler_levels(pooler: ROIPooler, boxes: Tensor) -> Tensor:
    """(R,) int64 index into ``pooler.level_poolers`` of each box (Detectron2's level assignment)."""
    if len(pooler.level_poolers) == 1:
        return boxes.new_zeros(boxes.shape[0], dtype=torch.int64)
    return assign_boxes_to_levels(
        [Boxes(boxes)], pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level
    )


def pool_rois(
    level_poolers: Sequence[nn.Module], features: Sequence[Tensor], boxes: Tensor, levels: Tensor
) -> Tensor:
    """:func:`pool_by_level` for one image: boxes (R, 4), levels (R,) -> (R, C, S, S)."""
    rois = torch.cat([boxes.new_zeros((boxes.shape[0], 1)), boxes], dim=1)
    return pool_by_level(level_poolers, features, rois, levels)


def rpn_proposals(rpn: RPN, features: List[Tensor], image_size: Tensor) -> Tuple[Tensor, Tensor]:
    """Test-time proposals of Detectron2's ``RPN`` (``find_top_rpn_proposals``) for one image.

    Args:
        features: the RPN's input maps (``rpn.in_features`` order), each (1, C, H_l, W_l).

    Returns:
        proposal boxes (P, 4) and their objectness logits (P,), by decreasing logit, P <= the
        post-NMS top-k.
    """
    anchors = rpn.anchor_generator(features)
    logits, deltas = rpn.rpn_head(features)
    # (1, A, H, W) -> (1, H*W*A); (1, A*4, H, W) -> (1, H*W*A, 4): the RPN's own flattening order.
    logits = [s.permute(0, 2, 3, 1).flatten(1) for s in logits]
    box_dim = rpn.anchor_generator.box_dim
    deltas = [
        d.view(d.shape[0], -1, box_dim, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
        for d in deltas
    ]
    proposals = rpn._decode_proposals(anchors, deltas)
    pre_nms_topk, post_nms_topk = rpn.pre_nms_topk[False], rpn.post_nms_topk[False]

    boxes, scores, levels = [], [], []
    for level, (p, s) in enumerate(zip(proposals, logits)):
        k = torch.sym_min(s.shape[1], pre_nms_topk)
        s, order = s[0].sort(descending=True)
        boxes.append(p[0][order[:k]])
        scores.append(s[:k])
        levels.append(torch.full((k,), level, dtype=torch.int64, device=s.device))
    boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)

    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
    boxes = clip_boxes(boxes, image_size)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = valid & (w > rpn.min_box_size) & (h > rpn.min_box_size)
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    keep = first_rows(batched_nms(boxes, scores, levels, rpn.nms_thresh), post_nms_topk)
    return boxes[keep], scores[keep]


def detect_boxes(
    roi_heads: StandardROIHeads, features: List[Tensor], proposals: Tensor, image_size: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """The box branch of ``StandardROIHeads`` at test time (``fast_rcnn_inference_single_image``).

    Args:
        features: the box pooler's maps (``roi_heads.box_in_features`` order), each (1, C, H_l, W_l).
        proposals: (P, 4) proposal boxes.

    Returns:
        boxes (N, 4), scores (N,) and classes (N,) int64, by decreasing score, N <= the detections
        per image.
    """
    pooler = roi_heads.box_pooler
    x = pool_rois(pooler.level_poolers, features, proposals, pooler_levels(pooler, proposals))
    predictor = roi_heads.box_predictor
    class_logits, box_deltas = predictor(roi_heads.box_head(with_spare_row(x))[: proposals.shape[0]])
    boxes = predictor.box2box_transform.apply_deltas(box_deltas, proposals)  # (P, K' * 4)
    probs = torch.softmax(class_logits, dim=-1)

    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)
    probs = probs[:, :-1]
    num_reg = boxes.shape[1] // 4
    boxes = clip_boxes(boxes.reshape(-1, 4), image_size).view(-1, num_reg, 4)
    candidates = (probs > predictor.test_score_thresh) & valid[:, None]
    inds = torch.nonzero(candidates)  # (M, 2): proposal, class; row-major as boolean indexing
    boxes = boxes[inds[:, 0], 0] if num_reg == 1 else boxes[candidates]
    scores = probs[candidates]
    keep = batched_nms(boxes, scores, inds[:, 1], predictor.test_nms_thresh)
    if predictor.test_topk_per_image >= 0:
        keep = first_rows(keep, predictor.test_topk_per_image)
    return boxes[keep], scores[keep], inds[keep, 1]


def mask_rcnn_probs(mask_logits: Tensor, classes: Optional[Tensor]) -> Tensor:
    """(N, K, M, M) mask logits -> (N, 1, M, M) probabilities of each detection's class
    (``mask_rcnn_inference``); a class-agnostic head (K = 1) ignores ``classes``."""
    if mask_logits.shape[1] == 1:
        return mask_logits.sigmoid()
    index = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    return mask_logits[index, classes][:, None].sigmoid()
