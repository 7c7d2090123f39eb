"""Training targets of Mask Transfiner (``shared/specs/transfiner.md`` §9): RoI masks at the context
and quadtree resolutions, the incoherence ground truth from the full-image mask, the boundary band and
the per-image semantic (foreground union) mask on the p2 grid."""
from dataclasses import dataclass
from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from detectron2.layers import ROIAlign
from detectron2.structures import BitMasks, Instances, PolygonMasks
from torch import Tensor

__all__ = [
    "TransfinerTargets",
    "full_image_masks",
    "incoherence_map",
    "incoherence_roi_targets",
    "boundary_targets",
    "semantic_target",
    "build_targets",
]

Masks = Union[PolygonMasks, BitMasks]


@dataclass
class TransfinerTargets:
    """Targets of the N foreground RoIs of a batch (concatenated over images, image 0 first).

    Attributes:
        gt_classes: (N,) int64.
        masks: one float32 (N, s, s) 0/1 RoI mask per size in ``mask_sizes`` (context 14, then the
            quadtree levels 28, 56, 112), rasterised inside the proposal boxes.
        incoherence: (N, R, R) float32 0/1 incoherence GT at the quadtree root size R (28).
        boundary: (N, R, R) float32 0/1 boundary band of the R x R mask.
        semantic: (B, 1, Hs, Ws) float32 0/1 union of each image's foreground masks on the p2 grid.
    """

    gt_classes: Tensor
    masks: List[Tensor]
    incoherence: Tensor
    boundary: Tensor
    semantic: Tensor


def full_image_masks(gt_masks: Masks, height: int, width: int) -> Tensor:
    """(G, height, width) float32 full-image masks: polygons rasterised at the (transformed, unpadded)
    image size, or the bitmasks themselves (which the reference does not support; §18.10)."""
    if isinstance(gt_masks, PolygonMasks):
        return BitMasks.from_polygon_masks(gt_masks, height, width).tensor.float()
    return gt_masks.tensor[:, :height, :width].float()


def incoherence_map(
    masks: Tensor, downscale: int = 2, residue_thresh: float = 0.01, abs_residue: bool = True
) -> Tensor:
    """Half-resolution incoherence map of full-image masks (§9 steps 2-4).

    ``u = up(down(m))``, residue ``r = |m - u|`` (signed ``m - u`` with ``abs_residue=False``),
    ``q = down(r)``, then every value of q >= ``residue_thresh`` becomes 1; smaller values (the
    reference's sub-threshold residues) are kept as they are. All resizes are bilinear,
    align_corners=False.

    Args:
        masks: (G, h, w) float masks.

    Returns:
        (G, h // downscale, w // downscale) float32.
    """
    h, w = masks.shape[-2:]
    small = (h // downscale, w // downscale)
    m = masks[:, None].float()
    recovered = F.interpolate(F.interpolate(m, small, mode="bilinear", align_corners=False), (h, w),
                              mode="bilinear", align_corners=False)
    residue = m - recovered
    if abs_residue:
        residue = residue.abs()
    q = F.interpolate(residue, small, mode="bilinear", align_corners=False)
    q = torch.where(q >= residue_thresh, torch.ones_like(q), q)
    return q[:, 0]


def incoherence_roi_targets(
    maps: Tensor, map_index: Tensor, boxes: Tensor, size: int = 28, downscale: int = 2, roi_thresh: float = 0.05
) -> Tensor:
    """RoIAlign (aligned, adaptive sampling, scale 1) of the incoherence maps in each proposal box
    divided by ``downscale``, thresholded at ``roi_thresh`` (§9 step 5).

    Args:
        maps: (G, h', w') incoherence maps (:func:`incoherence_map`).
        map_index: (N,) int64, the map of each box.
        boxes: (N, 4) proposal boxes (x0, y0, x1, y1) in image pixels.

    Returns:
        (N, size, size) bool.
    """
    if boxes.numel() == 0:
        return torch.zeros((0, size, size), dtype=torch.bool, device=boxes.device)
    rois = torch.cat([map_index.to(boxes.dtype)[:, None], boxes / float(downscale)], dim=1)
    pooled = ROIAlign((size, size), 1.0, 0, aligned=True)(maps[:, None].float(), rois.float())
    return pooled[:, 0] >= roi_thresh


def boundary_targets(masks: Tensor) -> Tensor:
    """Two-pixel contour band of RoI masks: binary dilation XOR binary erosion with a 3x3 cross.

    Erosion treats pixels outside the grid as foreground and dilation as background (§9), so the band
    is one pixel outside and one pixel inside the mask.

    Args:
        masks: (N, H, W) binary masks (any dtype).

    Returns:
        (N, H, W) bool.
    """
    m = masks.bool()
    if m.numel() == 0:
        return m.clone()

    def shifts(x: Tensor, fill: bool) -> List[Tensor]:
        p = F.pad(x[:, None].float(), (1, 1, 1, 1), value=float(fill))[:, 0].bool()
        return [p[:, 1:-1, 1:-1], p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]]

    dilated = torch.stack(shifts(m, False)).any(0)
    eroded = torch.stack(shifts(m, True)).all(0)
    return dilated ^ eroded


def semantic_target(masks: Tensor, size: Sequence[int]) -> Tensor:
    """Union of full-image masks, nearest-resized straight onto the p2 grid.

    The masks have the unpadded image size while p2 covers the padded image: the union is stretched
    onto the padded grid, reproducing the reference (§9, §18.4).

    Args:
        masks: (K, h, w) full-image masks (K may be 0: an all-zero target).
        size: (Hs, Ws) of the semantic logits.

    Returns:
        (1, 1, Hs, Ws) float32.
    """
    union = (masks.sum(0) >= 1).float() if len(masks) else masks.new_zeros(masks.shape[-2:]).float()
    return F.interpolate(union[None, None], tuple(size), mode="nearest")


def _unique_gt(instances: Instances) -> Tensor:
    """Index of the first proposal of each distinct matched GT and the inverse map (so the full-image
    work of §9 runs once per GT; the result equals the per-proposal computation)."""
    n = len(instances)
    if instances.has("gt_index"):
        uniq, inverse = torch.unique(instances.gt_index, return_inverse=True)
        first = torch.full((len(uniq),), n, dtype=torch.long, device=inverse.device)
        first.scatter_reduce_(0, inverse, torch.arange(n, device=inverse.device), reduce="amin")
        return first, inverse
    idx = torch.arange(n, device=instances.proposal_boxes.device)
    return idx, idx


def build_targets(
    instances: List[Instances],
    mask_sizes: Sequence[int],
    root_size: int,
    semantic_size: Sequence[int],
    downscale: int = 2,
    residue_thresh: float = 0.01,
    roi_thresh: float = 0.05,
    abs_residue: bool = True,
) -> TransfinerTargets:
    """All Transfiner targets of a batch's foreground proposals.

    Args:
        instances: per image, the foreground proposals with ``proposal_boxes``, ``gt_classes``,
            ``gt_masks`` (PolygonMasks or BitMasks of the matched GT) and optionally ``gt_index``
            (index of the matched GT, set by :class:`TransfinerROIHeads`). Images may be empty.
        mask_sizes: sizes of the RoI mask targets (e.g. 14, 28, 56, 112).
        root_size: size of the incoherence and boundary targets (28).
        semantic_size: (Hs, Ws) of the semantic logits (the p2 grid of the padded batch).
        downscale, residue_thresh, roi_thresh, abs_residue: incoherence GT constants (§9).
    """
    device = instances[0].proposal_boxes.device if instances else torch.device("cpu")
    classes, masks, incoh, semantic = [], [[] for _ in mask_sizes], [], []
    for inst in instances:
        h, w = inst.image_size
        if len(inst) == 0:
            # Reference crash §18.9: an image without foreground gets an all-zero semantic target.
            semantic.append(torch.zeros((1, 1, *semantic_size), device=device))
            continue
        boxes = inst.proposal_boxes.tensor
        classes.append(inst.gt_classes.to(torch.int64))
        for k, s in enumerate(mask_sizes):
            masks[k].append(inst.gt_masks.crop_and_resize(boxes, s).to(device=device, dtype=torch.float32))
        first, inverse = _unique_gt(inst)
        full = full_image_masks(inst.gt_masks[first], h, w).to(device)
        maps = incoherence_map(full, downscale, residue_thresh, abs_residue)
        incoh.append(incoherence_roi_targets(maps, inverse, boxes, root_size, downscale, roi_thresh).float())
        semantic.append(semantic_target(full, semantic_size))
    if not classes:
        empty = lambda s: torch.zeros((0, s, s), device=device)  # noqa: E731
        return TransfinerTargets(
            gt_classes=torch.zeros((0,), dtype=torch.int64, device=device),
            masks=[empty(s) for s in mask_sizes],
            incoherence=empty(root_size),
            boundary=empty(root_size),
            semantic=torch.cat(semantic) if semantic else torch.zeros((0, 1, *semantic_size), device=device),
        )
    masks = [torch.cat(m) for m in masks]
    root_masks = masks[list(mask_sizes).index(root_size)]
    return TransfinerTargets(
        gt_classes=torch.cat(classes),
        masks=masks,
        incoherence=torch.cat(incoh),
        boundary=boundary_targets(root_masks).float(),
        semantic=torch.cat(semantic),
    )
