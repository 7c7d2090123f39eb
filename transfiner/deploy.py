"""Export adapter of Detectron2's ``GeneralizedRCNN`` (Mask Transfiner, and plain Mask R-CNN).

The whole detector is the exported graph: backbone, RPN, box head and mask head, to boxes, scores,
classes and mask probabilities in box coordinates (112x112 after Transfiner's refinement, 28x28 for
a stock Mask R-CNN head). Its inputs are the padded image and the (h, w) of the resized image inside
it, to which Detectron2 clips every box.

Detectron2's inference code and Transfiner's refinement branch on tensor values, so the graph uses
export-friendly versions of the same computations (``segcommon.deploy.rcnn`` for the RPN and box
branch, :func:`transfiner_mask_probs` for the quadtree): all counts after filtering, NMS and node
selection are data-dependent sizes, and the up-to-``MAX_REFINE_ROIS_TEST`` refined detections are
processed in that many fixed slots (a slot beyond the number of detections selects no node and its
result is dropped). Post-processing is Detectron2's ``detector_postprocess``.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads import FastRCNNOutputLayers, StandardROIHeads
from detectron2.structures import Boxes, Instances
from torch import Tensor

from segcommon.deploy import ExportAdapter, ImageSizes, match_detections, register_export_adapter
from segcommon.deploy.rcnn import (
    detect_boxes,
    mask_rcnn_probs,
    pool_rois,
    pooler_levels,
    rpn_proposals,
    with_spare_row,
)

from .modeling.quadtree import binomial_blur, select_nodes
from .modeling.roi_heads.mask_head import TransfinerMaskHead
from .modeling.roi_heads.pooler import TransfinerMaskPooler

__all__ = ["GeneralizedRCNNExportAdapter", "transfiner_mask_probs"]


@register_export_adapter("GeneralizedRCNN")
class GeneralizedRCNNExportAdapter(ExportAdapter):
    """Inputs ``image`` (1, 3, H, W) and ``image_size`` (2,) int64 ``(h, w)``; outputs ``boxes``
    (N, 4) XYXY in input pixels, ``scores`` (N,), ``classes`` (N,) int64 and ``masks`` (N, 1, M, M)
    probabilities in box coordinates."""

    input_names = ("image", "image_size")
    output_names = ("boxes", "scores", "classes", "masks")
    supports_torchscript = False

    def __init__(self, model):
        super().__init__(model)
        roi_heads = model.roi_heads
        if not getattr(roi_heads, "mask_on", False):
            raise NotImplementedError("the GeneralizedRCNN export adapter needs a mask head (MODEL.MASK_ON True)")
        if getattr(roi_heads, "keypoint_on", False):
            raise NotImplementedError("exporting keypoint heads is not supported")
        if model.proposal_generator is None:
            raise NotImplementedError("exporting a GeneralizedRCNN with precomputed proposals is not supported")
        if not isinstance(roi_heads, StandardROIHeads) or not isinstance(roi_heads.box_predictor, FastRCNNOutputLayers):
            raise NotImplementedError(
                f"export supports one-stage box heads (StandardROIHeads, TransfinerROIHeads), not {type(roi_heads).__name__}"
            )

    @property
    def size_divisibility(self) -> int:
        return max(self.model.backbone.size_divisibility, 1)

    def forward(self, image: Tensor, image_size: Tensor) -> Tuple[Tensor, ...]:
        model = self.model
        features = model.backbone(image)
        rpn = model.proposal_generator
        proposals, _ = rpn_proposals(rpn, [features[f] for f in rpn.in_features], image_size)
        roi_heads = model.roi_heads
        boxes, scores, classes = detect_boxes(
            roi_heads, [features[f] for f in roi_heads.box_in_features], proposals, image_size
        )
        mask_features = [features[f] for f in roi_heads.mask_in_features]
        if isinstance(roi_heads.mask_head, TransfinerMaskHead):
            masks = transfiner_mask_probs(roi_heads.mask_head, roi_heads.mask_pooler, mask_features, boxes, classes)
        else:
            pooler = roi_heads.mask_pooler
            x = pool_rois(pooler.level_poolers, mask_features, boxes, pooler_levels(pooler, boxes))
            logits = roi_heads.mask_head.layers(with_spare_row(x))[: boxes.shape[0]]
            masks = mask_rcnn_probs(logits, classes)
        return boxes, scores, classes, masks

    def align_outputs(self, outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Detections paired one to one with ``reference``'s (same class, nearest box): near-equal
        scores may list them in another order. Left as they are when the counts differ."""
        boxes, _, classes, _ = outputs
        ref_boxes, _, ref_classes, _ = reference
        if len(boxes) != len(ref_boxes):
            return list(outputs)
        order, _ = match_detections(boxes, classes, ref_boxes, ref_classes)
        return [o[order] for o in outputs]

    def _postprocess(self, outputs: List[Tensor], sizes: ImageSizes) -> Dict:
        boxes, scores, classes, masks = outputs
        instances = Instances(sizes.image)
        instances.pred_boxes = Boxes(boxes)
        instances.scores = scores
        instances.pred_classes = classes
        instances.pred_masks = masks
        return {"instances": detector_postprocess(instances, *sizes.output)}


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    """The first ``rows`` rows of ``x``, zero-filled beyond ``len(x)``: (N, ...) -> (rows, ...)."""
    return torch.cat([x, x.new_zeros((rows, *x.shape[1:]))])[:rows]


def transfiner_mask_probs(
    head: TransfinerMaskHead, pooler: TransfinerMaskPooler, features: Sequence[Tensor], boxes: Tensor, classes: Tensor
) -> Tensor:
    """Transfiner's test-time masks of one image's detections (``TransfinerMaskPooler.forward`` and
    ``TransfinerMaskHead.inference``), with fixed-size slots for the refined detections.

    Args:
        features: the mask features [p2, p3, p4, p5], each (1, C, H_l, W_l).
        boxes: (N, 4) detections, by decreasing score; classes: (N,) int64.

    Returns:
        (N, 1, S, S) foreground probabilities (S the last refinement size): refined for the first
        ``min(N, pooler.max_rois_test)`` detections, the upsampled coarse mask for the others.
    """
    n = boxes.shape[0]
    levels = pooler_levels(pooler, boxes)
    # N + 1 rows from here on (see with_spare_row); the spare row is never an occupied slot.
    x14 = with_spare_row(pool_rois(pooler.level_poolers, features, boxes, levels))
    f, coarse = head.coarse_layers(x14)
    incoherence = head.incoherence_layers(x14, f).sigmoid()
    probs = mask_rcnn_probs(coarse, with_spare_row(classes))
    size = head.refine_sizes[-1]
    out = F.interpolate(probs, (size, size), mode="bilinear", align_corners=False)
    slots = pooler.max_rois_test
    if slots == 0:
        return out[:n]

    semantic = pooler.conv_norm_relus_semantic(features[0])
    fine_inputs = [features[0] + semantic] + list(features[1:])
    slot_rois = torch.cat([boxes.new_zeros((slots, 1)), _pad_rows(boxes, slots)], dim=1)
    fine = pooler.pool_fine(fine_inputs, slot_rois, _pad_rows(levels, slots))
    occupied = torch.arange(slots, device=boxes.device) < n
    refined = _refine_slots(
        head, _pad_rows(probs, slots), _pad_rows(incoherence, slots), _pad_rows(x14, slots), fine, occupied
    )
    # Refined slots replace the first rows; empty slots (beyond N) are cut off. Padding ``out`` to
    # at least ``slots`` rows first keeps every size exact: a slice starting past the end would be
    # sized max(N + 1 - slots, 0), which the exporter simplifies as if N + 1 >= slots.
    return torch.cat([refined, _pad_rows(out, out.shape[0] + slots)[slots:]])[:n]


def _refine_slots(
    head: TransfinerMaskHead,
    coarse_probs: Tensor,
    incoherence: Tensor,
    x14: Tensor,
    fine: Sequence[Tensor],
    occupied: Tensor,
) -> Tensor:
    """``TransfinerMaskHead.refine`` over ``n`` slots, of which ``occupied`` (n,) bool hold detections.

    The reference runs one sequence per RoI and writes back level by level; when no RoI has nodes on
    the middle level, that stage (and its upsampling) is skipped for all of them. Both paths are
    computed here and the batch-wide condition picks one, so no Python branch depends on data.

    Returns:
        (n, 1, S, S) probabilities.
    """
    sizes = head.refine_sizes
    if len(sizes) != 3:
        raise NotImplementedError(f"export supports three refinement sizes (root, middle, last), got {sizes}")
    dilation = head.demo_dilation_kernel if head.demo_smoothing else 0
    selections = select_nodes(incoherence, sizes, head.node_thresholds_test, dilation)
    selections = [sel & occupied[:, None, None] for sel in selections]
    cues, positions = head._level_inputs(coarse_probs, fine)
    ctx_tokens, ctx_pos = head._context(x14, coarse_probs)
    num_ctx = ctx_tokens.shape[1]
    any_middle = selections[1].any()

    results = []
    for i in range(coarse_probs.shape[0]):
        cells, tokens, pos = [], [ctx_tokens[i]], [ctx_pos[i]]
        for sel, feats, cue, level_pos in zip(selections, fine, cues, positions):
            rows, cols = torch.nonzero(sel[i], as_tuple=True)
            cells.append((rows, cols))
            tokens.append(torch.cat([feats[i][:, rows, cols].t(), cue[i][rows, cols][:, None]], dim=1))
            pos.append(level_pos[:, rows, cols].t())
        out = head.encoder(torch.cat(tokens)[None], torch.cat(pos)[None])[0, num_ctx:]
        counts = [rows.shape[0] for rows, _ in cells]
        values = [out[: counts[0]], out[counts[0]: counts[0] + counts[1]], out[counts[0] + counts[1]:]]

        def write(r: Tensor, k: int) -> Tensor:
            rows, cols = cells[k]
            return r.index_put((rows, cols), values[k].to(r.dtype))

        def up(r: Tensor, s: int) -> Tensor:
            return F.interpolate(r[None, None], (s, s), mode="bilinear", align_corners=True)[0, 0]

        r = write(coarse_probs[i, 0], 0)
        through_middle = up(write(up(r, sizes[1]), 1), sizes[2])
        r = torch.where(any_middle, through_middle, up(r, sizes[2]))
        results.append(write(r, 2))
    r = torch.stack(results)[:, None]
    if head.demo_smoothing:
        r = binomial_blur(r, head.demo_blur_kernel)
    return r
