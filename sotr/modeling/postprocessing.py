"""SOTR inference for one image (``shared/specs/sotr.md`` §11 steps 1-10): score threshold, dynamic
masks, area filter, mask scoring, top-k, matrix NMS, top-k, resize to the output size."""
import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torch.nn import functional as F

from .losses import dynamic_mask_logits
from .matrix_nms import mask_nms, matrix_nms

__all__ = ["InferenceParams", "inference_single_image", "masks_to_boxes"]


@dataclass
class InferenceParams:
    """Inference hyper-parameters (``MODEL.SOTR.*``)."""

    num_grids: Sequence[int]
    strides: Sequence[int]
    score_thr: float = 0.1
    mask_thr: float = 0.5
    nms_pre: int = 500
    nms_type: str = "matrix"
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0
    update_thr: float = 0.05
    max_per_img: int = 100
    # Tight boxes around the final masks; False gives the reference's all-zero boxes.
    boxes_from_masks: bool = True


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(n, H, W) bool -> (n, 4) XYXY boxes enclosing the foreground pixels (``x1, y1`` of the first
    pixel, ``x2, y2`` one past the last, so a one-pixel mask has area 1); zeros for an empty mask."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    if masks.numel() == 0:
        return boxes
    rows, cols = masks.any(2), masks.any(1)  # (n, H), (n, W)
    h, w = masks.shape[-2:]
    ys = torch.arange(h, device=masks.device, dtype=torch.float32)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32)
    inf = torch.tensor(float("inf"), device=masks.device)
    boxes[:, 0] = torch.where(cols, xs, inf).amin(1)
    boxes[:, 1] = torch.where(rows, ys, inf).amin(1)
    boxes[:, 2] = torch.where(cols, xs, -inf).amax(1) + 1
    boxes[:, 3] = torch.where(rows, ys, -inf).amax(1) + 1
    nonempty = rows.any(1)
    return torch.where(nonempty[:, None], boxes, torch.zeros_like(boxes))


def _empty(output_size: Tuple[int, int], device: torch.device) -> Instances:
    result = Instances(output_size)
    result.scores = torch.zeros((0,), dtype=torch.float32, device=device)
    result.pred_classes = torch.zeros((0,), dtype=torch.int64, device=device)
    result.pred_masks = torch.zeros((0, *output_size), dtype=torch.bool, device=device)
    result.pred_boxes = Boxes(torch.zeros((0, 4), dtype=torch.float32, device=device))
    return result


def inference_single_image(
    cate_scores: torch.Tensor,
    kernels: torch.Tensor,
    mask_features: torch.Tensor,
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    params: InferenceParams,
) -> Instances:
    """
    Args:
        cate_scores: (C, K) class probabilities after point NMS, cells of all levels concatenated
            (level-major, row-major within a level).
        kernels: (C, D) the cells' kernels, same order.
        mask_features: (D, f_h, f_w) this image's mask features (stride 4 of the padded canvas).
        image_size: (h, w) of the resized, unpadded input.
        output_size: (H0, W0) of the output (the dataset dict's ``height``/``width``).
        params: thresholds and sizes.

    Returns:
        ``Instances`` of ``output_size`` with ``pred_masks`` (n, H0, W0) bool, ``scores`` (n,),
        ``pred_classes`` (n,) int64 and ``pred_boxes`` (n, 4), sorted by descending score.
    """
    device = cate_scores.device
    h, w = image_size
    f_h, f_w = mask_features.shape[-2:]

    candidates = cate_scores > params.score_thr
    scores = cate_scores[candidates]
    if scores.numel() == 0:
        return _empty(output_size, device)
    cells, labels = candidates.nonzero().unbind(1)

    # Stride of each candidate's level (only used by the area filter).
    cells_per_level = torch.tensor([s * s for s in params.num_grids], device=device)
    level_strides = torch.tensor(list(params.strides), dtype=kernels.dtype, device=device)
    strides = level_strides.repeat_interleave(cells_per_level)[cells]

    # A cell above the threshold for several classes gives several candidates with the same kernel,
    # hence the same mask: compute each distinct cell's mask once (the reference computes one per
    # candidate; the numbers are identical, the memory is up to K times smaller).
    unique_cells, cell_of = torch.unique_consecutive(cells, return_inverse=True)  # nonzero() sorts cells
    cell_soft = dynamic_mask_logits(kernels[unique_cells], mask_features).sigmoid()  # (U, f_h, f_w)
    cell_binary = cell_soft > params.mask_thr
    cell_areas = cell_binary.sum((1, 2)).float()
    # Mask scoring: the mean probability inside the binary mask.
    cell_maskness = (cell_soft * cell_binary.float()).sum((1, 2)) / cell_areas

    # Area (in stride-4 pixels) must exceed the level's stride.
    keep = cell_areas[cell_of] > strides
    if not keep.any():
        return _empty(output_size, device)
    cell_of, scores, labels = cell_of[keep], scores[keep], labels[keep]
    scores = scores * cell_maskness[cell_of]

    order = torch.argsort(scores, descending=True)[: params.nms_pre]
    cell_of, scores, labels = cell_of[order], scores[order], labels[order]
    binary, soft, areas = cell_binary[cell_of], cell_soft[cell_of], cell_areas[cell_of]

    if params.nms_type == "matrix":
        scores = matrix_nms(labels, binary, areas, scores, sigma=params.nms_sigma, kernel=params.nms_kernel)
        keep = scores >= params.update_thr
    elif params.nms_type == "mask":
        # As the reference: MASK_THR doubles as the IoU threshold.
        keep = mask_nms(labels, binary, areas, scores, iou_threshold=params.mask_thr)
    else:
        raise ValueError(f"unknown MODEL.SOTR.NMS_TYPE {params.nms_type!r} (expected 'matrix' or 'mask')")
    if not keep.any():
        return _empty(output_size, device)
    soft, scores, labels = soft[keep], scores[keep], labels[keep]

    order = torch.argsort(scores, descending=True)[: params.max_per_img]
    soft, scores, labels = soft[order], scores[order], labels[order]

    # Back to the input resolution (integer factor), crop the padding, then to the output size.
    ratio = math.ceil(h / f_h)
    soft = F.interpolate(soft[None], size=(f_h * ratio, f_w * ratio), mode="bilinear", align_corners=False)
    soft = F.interpolate(soft[:, :, :h, :w], size=output_size, mode="bilinear", align_corners=False)[0]
    masks = soft > params.mask_thr

    result = Instances(output_size)
    result.pred_masks = masks
    result.scores = scores
    result.pred_classes = labels
    boxes = masks_to_boxes(masks) if params.boxes_from_masks else torch.zeros((masks.shape[0], 4), device=device)
    result.pred_boxes = Boxes(boxes)
    return result
