"""Mask2Former's per-image inference: semantic, panoptic and instance results from one image's
class logits ``mask_cls`` (Q, K+1) and mask logits ``mask_pred`` (Q, H, W), K classes, Q queries.

Pure functions of tensors and thresholds (no config), following the official
``MaskFormer.{semantic,panoptic,instance}_inference``; see ``shared/specs/mask2former.md`` §2.5-2.7.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import BitMasks, Boxes, Instances
from torch.nn import functional as F

__all__ = [
    "semantic_inference",
    "panoptic_inference",
    "instance_inference",
    "instance_topk",
    "instances_from_selection",
    "instances_from_lowres_selection",
    "upsample_mask_logits",
]


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Per-class scores ``sem[c] = sum_q softmax(cls_q)[c] * sigmoid(mask_q)``, (K, H, W), not
    normalised over classes (the no-object column is dropped after the softmax)."""
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_pred.sigmoid())


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    thing_ids: Sequence[int],
    object_mask_threshold: float,
    overlap_threshold: float,
) -> Tuple[torch.Tensor, List[Dict]]:
    """Panoptic segments from the queries that are confident and own enough of their own mask.

    Returns:
        panoptic_seg: (H, W) int32, 0 = void, i > 0 = ``segments_info[i - 1]``;
        segments_info: ``[{"id", "isthing", "category_id" (contiguous)}]``. Stuff queries of one
        class share one segment.
    """
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep].sigmoid()

    h, w = mask_pred.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device)
    segments_info: List[Dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info

    owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)  # first index wins ties
    thing_ids = set(thing_ids)
    stuff_segment_ids: Dict[int, int] = {}
    for k in range(cur_classes.shape[0]):
        category = int(cur_classes[k])
        is_thing = category in thing_ids
        owned = owner == k
        mask_area = int(owned.sum())
        original_area = int((cur_masks[k] >= 0.5).sum())
        region = owned & (cur_masks[k] >= 0.5)
        if mask_area == 0 or original_area == 0 or int(region.sum()) == 0:
            continue
        # A query that lost most of its own mask to higher-scoring ones is a duplicate.
        if mask_area / original_area < overlap_threshold:
            continue
        if not is_thing and category in stuff_segment_ids:
            panoptic_seg[region] = stuff_segment_ids[category]
            continue
        segment_id = len(segments_info) + 1
        if not is_thing:
            stuff_segment_ids[category] = segment_id
        panoptic_seg[region] = segment_id
        segments_info.append({"id": segment_id, "isthing": is_thing, "category_id": category})
    return panoptic_seg, segments_info


def instance_topk(
    mask_cls: torch.Tensor, topk: int, thing_ids: Optional[Sequence[int]] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``topk`` best (query, class) pairs over all Q x K class scores (unsorted), as
    ``(scores, classes, query_indices)``; a query may be selected more than once. Depends on the
    class logits only, so the masks of just the selected queries need upsampling.

    Args:
        topk: detections kept per image (``TEST.DETECTIONS_PER_IMAGE``).
        thing_ids: if given (panoptic models), pairs of other classes are dropped.
    """
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[-1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes, device=mask_cls.device).repeat(num_queries)
    scores_per_image, topk_indices = scores.flatten().topk(min(topk, scores.numel()), sorted=False)
    labels_per_image = labels[topk_indices]
    query_indices = topk_indices // num_classes

    if thing_ids is not None:
        keep = torch.isin(
            labels_per_image, torch.as_tensor(list(thing_ids), dtype=labels_per_image.dtype, device=labels_per_image.device)
        )
        scores_per_image, labels_per_image, query_indices = (
            scores_per_image[keep], labels_per_image[keep], query_indices[keep]
        )
    return scores_per_image, labels_per_image, query_indices


def instances_from_selection(
    scores_per_image: torch.Tensor, labels_per_image: torch.Tensor, mask_pred: torch.Tensor
) -> Instances:
    """``Instances`` from the selection of :func:`instance_topk` and the selected queries' mask
    logits ``mask_pred`` (n, H, W) at output resolution (row i belongs to pair i)."""
    masks, mask_scores, boxes = _mask_results(mask_pred)
    return _instances(scores_per_image, labels_per_image, masks.float(), mask_scores, boxes)


def instances_from_lowres_selection(
    scores_per_image: torch.Tensor,
    labels_per_image: torch.Tensor,
    mask_pred: torch.Tensor,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
    chunk_size: int = 8,
) -> Instances:
    """:func:`instances_from_selection` of the selected queries' 1/4-resolution mask logits
    ``mask_pred`` (n, h, w), resized as :func:`upsample_mask_logits` does, ``chunk_size`` masks at a
    time: only the final 0/1 masks are ever held at output resolution (n float logit maps of a
    large image take gigabytes, and small chunks stay in the CPU's caches)."""
    height, width = output_size
    n = mask_pred.shape[0]
    masks = mask_pred.new_zeros((n, height, width))
    mask_scores = mask_pred.new_zeros((n,))
    boxes = mask_pred.new_zeros((n, 4))
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        logits = upsample_mask_logits(mask_pred[rows], padded_size, image_size, output_size)
        fg, mask_scores[rows], boxes[rows] = _mask_results(logits)
        masks[rows] = fg
    return _instances(scores_per_image, labels_per_image, masks, mask_scores, boxes)


def upsample_mask_logits(
    mask_pred: torch.Tensor, padded_size: Sequence[int], image_size: Sequence[int], output_size: Sequence[int]
) -> torch.Tensor:
    """Mask logits (n, h, w) at 1/4 of the padded batch to the output size (n, height, width):
    bilinear to ``padded_size``, then Detectron2's ``sem_seg_postprocess`` (crop to ``image_size``,
    bilinear to the output size), whose resize is skipped when the crop already has the output size
    (it is then the identity)."""
    height, width = output_size
    if mask_pred.shape[0] == 0:  # interpolate rejects empty inputs
        return mask_pred.new_zeros((0, height, width))
    mask_pred = F.interpolate(mask_pred[None], size=tuple(padded_size), mode="bilinear", align_corners=False)[0]
    mask_pred = mask_pred[:, : image_size[0], : image_size[1]]
    if tuple(mask_pred.shape[-2:]) == (height, width):
        return mask_pred
    return F.interpolate(mask_pred[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def _mask_results(mask_pred: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From mask logits (n, H, W): the masks ``logit > 0`` (bool), their scores (mean foreground
    probability) and their tight boxes (n, 4) XYXY in pixels (zeros for empty masks)."""
    fg = mask_pred > 0
    area = fg.flatten(1).sum(1)
    mask_scores = (mask_pred.sigmoid().flatten(1) * fg.flatten(1)).sum(1) / (area + 1e-6)
    return fg, mask_scores, BitMasks(fg).get_bounding_boxes().tensor


def _instances(scores_per_image, labels_per_image, masks, mask_scores, boxes) -> Instances:
    result = Instances(tuple(masks.shape[-2:]))
    result.pred_masks = masks
    # The official code emits all-zero boxes; tight boxes leave segm AP unchanged and make bbox AP
    # and the visualiser meaningful.
    result.pred_boxes = Boxes(boxes)
    result.scores = scores_per_image * mask_scores
    result.pred_classes = labels_per_image
    return result


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    topk: int,
    thing_ids: Optional[Sequence[int]] = None,
) -> Instances:
    """The ``topk`` best (query, class) pairs over all Q x K class scores, as ``Instances``.

    Args:
        topk: detections kept per image (``TEST.DETECTIONS_PER_IMAGE``).
        thing_ids: if given (panoptic models), pairs of other classes are dropped.
    Returns:
        Instances of image size (H, W) with ``pred_masks`` (n, H, W) float 0/1 (``logit > 0``),
        ``pred_boxes`` the tight boxes around the masks (XYXY, pixels; empty masks give zero boxes),
        ``scores`` = class score x mean foreground mask probability, ``pred_classes`` int64.
    """
    scores_per_image, labels_per_image, query_indices = instance_topk(mask_cls, topk, thing_ids)
    return instances_from_selection(scores_per_image, labels_per_image, mask_pred[query_indices])
