"""Ground-truth assignment of SOTR (the SOLO/SOLOv2 recipe; ``shared/specs/sotr.md`` §9).

Per image and level, an instance whose scale ``sqrt(box area)`` lies in the level's range marks as
positive the grid cells of a "centre region" (``SIGMA`` x its box, centred on the mask's centre of
mass, clipped to the 3x3 cells around the centre cell). Every positive cell gets the instance's class
and, as mask target, the instance mask downscaled to stride 4 in the top-left corner of the padded
stride-4 canvas.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.structures import BitMasks, Instances, PolygonMasks

__all__ = ["LevelTargets", "center_of_mass", "downscale_masks_quarter", "build_targets", "build_targets_single"]

# Stride of the mask features relative to the padded input.
MASK_STRIDE = 4
# Channels OpenCV resizes in one call: CV_CN_MAX is 512 in OpenCV 4 and 128 in OpenCV 5. Resizing is
# per channel, so chunking does not change the result.
_CV_MAX_CHANNELS = 128


@dataclass
class LevelTargets:
    """Targets of one image at one level.

    Attributes:
        cate_label: (S, S) int64, the class of each cell; ``num_classes`` for background. When two
            instances claim a cell, the later one's class is kept.
        positive: (S*S,) bool, cells with at least one instance.
        grid_order: (P,) int64 row-major cell index of every (cell, instance) pair, duplicates kept.
        mask_targets: (P, H_pad/4, W_pad/4) uint8 mask target of each pair.
    """

    cate_label: torch.Tensor
    positive: torch.Tensor
    grid_order: torch.Tensor
    mask_targets: torch.Tensor


def center_of_mass(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean x and y pixel *index* of the foreground of each mask (no +0.5).

    Args:
        masks: (M, H, W) binary masks (any dtype).

    Returns:
        ``(center_x, center_y)``, each (M,) float32. An empty mask gives (0, 0).
    """
    _, h, w = masks.shape
    masks = masks.float()
    ys = torch.arange(h, dtype=torch.float32, device=masks.device)
    xs = torch.arange(w, dtype=torch.float32, device=masks.device)
    # Summed over the last axis first, like the reference (float32 sums are order-dependent).
    m00 = masks.sum(dim=-1).sum(dim=-1).clamp(min=1e-6)
    m10 = (masks * xs).sum(dim=-1).sum(dim=-1)
    m01 = (masks * ys[:, None]).sum(dim=-1).sum(dim=-1)
    return m10 / m00, m01 / m00


def downscale_masks_quarter(masks: np.ndarray) -> np.ndarray:
    """Downscales binary masks by 4 with OpenCV's bilinear resize, as the reference does.

    OpenCV's fixed-point uint8 bilinear sampling is not reproduced by ``F.interpolate``, so OpenCV
    itself is used for exact targets.

    Args:
        masks: (M, h, w) uint8 0/1 masks.

    Returns:
        (M, floor(h/4 + 0.5), floor(w/4 + 0.5)) uint8 0/1 masks.
    """
    m, h, w = masks.shape
    size = (int(w / MASK_STRIDE + 0.5), int(h / MASK_STRIDE + 0.5))  # OpenCV takes (width, height)
    out = np.zeros((m, size[1], size[0]), dtype=np.uint8)
    for start in range(0, m, _CV_MAX_CHANNELS):
        chunk = np.ascontiguousarray(masks[start : start + _CV_MAX_CHANNELS].transpose(1, 2, 0))
        resized = cv2.resize(chunk, size, interpolation=cv2.INTER_LINEAR)
        if resized.ndim == 2:  # OpenCV drops a single channel
            resized = resized[..., None]
        out[start : start + chunk.shape[2]] = resized.transpose(2, 0, 1)
    return out


def _grid_index(v: torch.Tensor, length: int, num_grid: int) -> torch.Tensor:
    """Cell index ``(v / length) // (1 / S)`` in float32 with floor division, as the reference.

    This differs from ``floor(v * S / length)`` at exact cell boundaries (e.g. v = length gives
    S - 1); mirrored for bit-exact targets.
    """
    return torch.div(v / length, 1.0 / num_grid, rounding_mode="floor").long()


def build_targets_single(
    instances: Instances,
    mask_feat_size: Tuple[int, int],
    scale_ranges: Sequence[Sequence[float]],
    num_grids: Sequence[int],
    sigma: float,
    num_classes: int,
) -> List[LevelTargets]:
    """Targets of one image at every level.

    Args:
        instances: ``gt_boxes`` (XYXY, absolute pixels), ``gt_classes`` (contiguous ids) and
            ``gt_masks`` (``BitMasks``, ``PolygonMasks`` or a (M, h, w) tensor at the unpadded
            image size).
        mask_feat_size: (H_pad/4, W_pad/4), the size of the mask features; the grid covers the
            padded canvas ``4 x`` this size.
        scale_ranges: inclusive [low, high] of sqrt(box area) per level.
        num_grids: grid size S per level.
        sigma: centre-region scale.
        num_classes: K, also the background value of ``cate_label``.

    Returns:
        One :class:`LevelTargets` per level.
    """
    fh, fw = mask_feat_size
    pad_h, pad_w = fh * MASK_STRIDE, fw * MASK_STRIDE
    boxes = instances.gt_boxes.tensor
    device = boxes.device
    labels = instances.gt_classes
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        # INPUT.MASK_FORMAT "polygon": rasterise as the mapper does for "bitmask" (pycocotools).
        masks = BitMasks.from_polygon_masks(masks, *instances.image_size)
    masks = masks if torch.is_tensor(masks) else masks.tensor
    num_inst = len(labels)

    scales = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    half_w = 0.5 * (boxes[:, 2] - boxes[:, 0]) * sigma
    half_h = 0.5 * (boxes[:, 3] - boxes[:, 1]) * sigma
    center_x, center_y = center_of_mass(masks)
    # Instances with an empty mask count for level membership but produce nothing.
    valid = masks.flatten(1).sum(1) > 0
    # Downscaling is per mask, so doing every instance once equals the reference's per-level calls.
    small = torch.zeros((num_inst, fh, fw), dtype=torch.uint8, device=device)
    if num_inst:
        resized = downscale_masks_quarter(masks.to(torch.uint8).cpu().numpy())
        rh, rw = min(resized.shape[1], fh), min(resized.shape[2], fw)
        small[:, :rh, :rw] = torch.from_numpy(resized[:, :rh, :rw]).to(device)

    targets = []
    for (low, high), num_grid in zip(scale_ranges, num_grids):
        cate_label = torch.full((num_grid, num_grid), num_classes, dtype=torch.int64, device=device)
        positive = torch.zeros(num_grid**2, dtype=torch.bool, device=device)
        grid_order: List[int] = []
        owner: List[int] = []
        members = ((scales >= low) & (scales <= high) & valid).nonzero().flatten().tolist()
        if members:
            idx = torch.as_tensor(members, device=device)
            cy, cx, hh, hw = center_y[idx], center_x[idx], half_h[idx], half_w[idx]
            ci, cj = _grid_index(cy, pad_h, num_grid), _grid_index(cx, pad_w, num_grid)
            top = torch.maximum(_grid_index(cy - hh, pad_h, num_grid).clamp(min=0), ci - 1)
            bottom = torch.minimum(_grid_index(cy + hh, pad_h, num_grid).clamp(max=num_grid - 1), ci + 1)
            left = torch.maximum(_grid_index(cx - hw, pad_w, num_grid).clamp(min=0), cj - 1)
            right = torch.minimum(_grid_index(cx + hw, pad_w, num_grid).clamp(max=num_grid - 1), cj + 1)
            rects = torch.stack([top, bottom, left, right], 1).tolist()
            for k, (t, b, l, r) in zip(members, rects):
                # Annotation order: a later instance overwrites an earlier one's class.
                cate_label[t : b + 1, l : r + 1] = labels[k]
                for i in range(t, b + 1):
                    for j in range(l, r + 1):
                        grid_order.append(i * num_grid + j)
                        owner.append(k)
        order = torch.as_tensor(grid_order, dtype=torch.int64, device=device)
        positive[order] = True
        owner_t = torch.as_tensor(owner, dtype=torch.int64, device=device)
        targets.append(LevelTargets(cate_label, positive, order, small[owner_t]))
    return targets


@torch.no_grad()
def build_targets(
    gt_instances: Sequence[Instances],
    mask_feat_size: Tuple[int, int],
    scale_ranges: Sequence[Sequence[float]],
    num_grids: Sequence[int],
    sigma: float,
    num_classes: int,
) -> List[List[LevelTargets]]:
    """:func:`build_targets_single` for every image: ``targets[image][level]``."""
    return [
        build_targets_single(inst, mask_feat_size, scale_ranges, num_grids, sigma, num_classes)
        for inst in gt_instances
    ]
