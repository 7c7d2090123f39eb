"""Pure-PyTorch stand-in for Detectron2 v0.6's compiled extension ``detectron2._C``.

``install_detectron2.py`` copies this file into the installed package as ``detectron2/_C.py``, so
``from detectron2 import _C`` works without building C++/CUDA. It is imported while
``detectron2.layers`` is being imported, so it depends on torch, torchvision and the standard
library only. Every op accepts CPU and CUDA tensors alike (the C++ versions of the deformable
convolutions are CUDA-only).

Ops, with the call signatures of the v0.6 bindings:

* ``box_iou_rotated(boxes1 (N, 5), boxes2 (M, 5)) -> (N, M)``: IoU of rotated boxes.
* ``torch.ops.detectron2.nms_rotated(boxes (N, 5), scores (N,), iou_threshold) -> (K,) int64``:
  greedy NMS, indices into ``boxes`` sorted by decreasing score (also ``_C.nms_rotated``).
* ``roi_align_rotated_forward(input (B, C, H, W), rois (K, 6), spatial_scale, pooled_h, pooled_w,
  sampling_ratio) -> (K, C, pooled_h, pooled_w)`` and ``roi_align_rotated_backward(grad (K, C,
  pooled_h, pooled_w), rois, spatial_scale, pooled_h, pooled_w, B, C, H, W, sampling_ratio) ->
  (B, C, H, W)``.
* ``deform_conv_forward``, ``deform_conv_backward_input``, ``deform_conv_backward_filter``,
  ``modulated_deform_conv_forward``, ``modulated_deform_conv_backward``: deformable convolution
  v1/v2 through ``torchvision.ops.deform_conv2d`` (same offset layout: for deformable group g and
  kernel tap (i, j), offset channels ``g*2*kH*kW + 2*(i*kW + j)`` (dy) and ``... + 1`` (dx), mask
  channel ``g*kH*kW + i*kW + j``). Like the C++, they write into the tensors the caller passes.

Conventions. A rotated box is ``(cx, cy, w, h, angle)`` in pixels, angle in degrees, positive
counter-clockwise as seen on screen (image y axis points down): the box's width axis points along
``(cos a, -sin a)`` and its height axis along ``(sin a, cos a)``. A RoI is ``(batch_index, cx, cy,
w, h, angle)`` in input-image pixels; ``spatial_scale`` maps it onto the feature map, whose pixel
(i, j) is sampled at continuous coordinate (i + 0.5, j + 0.5) (hence the -0.5 shift).

The fast COCO evaluation of the C++ extension (``COCOevalAccumulate``, ``COCOevalEvaluateImages``,
``InstanceAnnotation``, ``ImageEvaluation``) is deliberately absent: the patched COCOEvaluator falls
back to pycocotools when it does not find them.
"""
import math
from typing import List, Optional, Tuple

import torch
import torchvision

Tensor = torch.Tensor


def get_compiler_version() -> str:
    return "none (pure-PyTorch detectron2._C)"


def get_cuda_version() -> str:
    return "none (pure-PyTorch detectron2._C)"


def has_cuda() -> bool:
    return False


def _float32(x: float) -> float:
    """``x`` rounded to float32: the C++ ops take ``spatial_scale`` / ``iou_threshold`` as float."""
    return float(torch.tensor(x, dtype=torch.float32))


# ------------------------------------------------------------------------------------------------
# Rotated box IoU
# ------------------------------------------------------------------------------------------------

# box_iou_rotated_utils.h converts degrees with this truncated constant, not pi / 180.
_BOX_DEG2RAD = 0.01745329251
# Pairs per chunk in the pairwise kernels: about 2 KiB of float64 temporaries per pair.
_IOU_CHUNK = 1 << 16


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _box_params(boxes: Tensor) -> Tensor:
    """(N, 5) boxes -> (N, 8) float64: cx, cy, half axes U (2), V (2), area w*h, circumradius.

    U = (cos a, -sin a) * w/2 and V = (sin a, cos a) * h/2; the corners are c + U + V, c + U - V,
    c - U - V, c - U + V, in the C++'s order (clockwise with y up when w*h > 0).
    """
    cx, cy, w, h, a = boxes.to(torch.float64).unbind(-1)
    theta = a * _BOX_DEG2RAD
    c = torch.cos(theta) * 0.5
    s = torch.sin(theta) * 0.5
    return torch.stack([cx, cy, c * w, -s * w, s * h, c * h, w * h, 0.5 * torch.hypot(w, h)], -1)


def _corners(center: Tensor, params: Tensor) -> Tensor:
    """(P, 2) centers, (P, 8) box params -> (P, 4, 2) corners."""
    u, v = params[:, 2:4], params[:, 4:6]
    return torch.stack([center + u + v, center + u - v, center - u - v, center - u + v], 1)


def _clip_edges(p: Tensor, q: Tensor) -> Tuple[Tensor, Tensor]:
    """End points of the parts of p's edges inside q (Cyrus-Beck clipping).

    p, q (P, 4, 2) clockwise (y up) quadrilaterals -> points (P, 8, 2), valid (P, 8). Edge
    a + t*d, t in [0, 1], is clipped by q's half-planes cross(x - q_k, e_k) >= 0.
    """
    a, d = p[:, :, None], (p.roll(-1, 1) - p)[:, :, None]  # edges of p along dim 1
    qk, ek = q[:, None], (q.roll(-1, 1) - q)[:, None]  # half-planes of q along dim 2
    n = _cross(a - qk, ek)  # inside-ness at t = 0 ...
    m = _cross(d, ek)  # ... and its rate of change along the edge
    parallel = m == 0
    bound = -n / torch.where(parallel, torch.ones_like(m), m)
    t0 = torch.where(m > 0, bound, torch.zeros_like(bound)).amax(-1).clamp(min=0)
    t1 = torch.where(m < 0, bound, torch.ones_like(bound)).amin(-1).clamp(max=1)
    valid = (t0 <= t1) & ~(parallel & (n < 0)).any(-1)
    a, d = a[:, :, 0], d[:, :, 0]
    points = torch.stack([a + d * t0[..., None], a + d * t1[..., None]], 2).flatten(1, 2)
    return points, valid.repeat_interleave(2, 1)


def _intersection_area(p1: Tensor, p2: Tensor) -> Tensor:
    """Area of the intersection of two boxes given by their corners (P, 4, 2) float64 -> (P,).

    The boundary of the (convex) intersection is made of the parts of each box's edges inside the
    other box; their end points include every vertex of it. Sorted by angle around their centroid,
    they give the area by the shoelace formula, i.e. the area of their convex hull, which the C++
    computes with a Graham scan over its own candidate points (edge crossings and corners inside
    the other box). Duplicate and collinear points add nothing, which keeps shared, collinear and
    nearly collinear edges harmless. Fewer than 3 points: area 0, as in the C++.
    """
    pts1, ok1 = _clip_edges(p1, p2)
    pts2, ok2 = _clip_edges(p2, p1)
    cand = torch.cat([pts1, pts2], 1)  # (P, 16, 2)
    valid = torch.cat([ok1, ok2], 1)
    cand = torch.where(valid[..., None], cand, torch.zeros_like(cand))
    num = valid.sum(1)
    center = cand.sum(1) / num.clamp(min=1)[:, None].to(cand.dtype)
    rel = cand - center[:, None]
    angle = torch.atan2(rel[..., 1], rel[..., 0]).masked_fill(~valid, math.inf)
    order = angle.argsort(1)
    rel = rel.gather(1, order[..., None].expand(-1, -1, 2))
    # Pad with the first point: repeated points add nothing to the shoelace sum.
    rel = torch.where(valid.gather(1, order)[..., None], rel, rel[:, :1])
    area = _cross(rel, rel.roll(-1, 1)).sum(1).abs() * 0.5
    return torch.where(num > 2, area, torch.zeros_like(area))


def _iou_pairs(params1: Tensor, params2: Tensor) -> Tensor:
    """IoU of corresponding rows of box params (P, 8) (see ``_box_params``) -> (P,) float64."""
    # Work relative to the midpoint of the two centers, for precision (as the C++ does).
    shift = (params1[:, :2] + params2[:, :2]) / 2.0
    c1, c2 = params1[:, :2] - shift, params2[:, :2] - shift
    area1, area2 = params1[:, 6], params2[:, 6]
    iou = torch.zeros_like(area1)
    # Only pairs with usable areas whose circumscribed circles meet can have an intersection.
    reach = (params1[:, 7] + params2[:, 7]) * (1 + 1e-6) + 1e-9
    near = torch.hypot(c1[:, 0] - c2[:, 0], c1[:, 1] - c2[:, 1]) <= reach
    idx = (near & (area1 >= 1e-14) & (area2 >= 1e-14)).nonzero().squeeze(1)
    if idx.numel() > 0:
        p1, p2 = params1.index_select(0, idx), params2.index_select(0, idx)
        a1, a2 = area1.index_select(0, idx), area2.index_select(0, idx)
        inter = _intersection_area(
            _corners(c1.index_select(0, idx), p1), _corners(c2.index_select(0, idx), p2)
        )
        # Identical boxes: exactly 1 (the C++ gets 1 +- rounding), so that NMS at threshold 1
        # removes exact duplicates deterministically.
        inter = torch.where((p1 == p2).all(1), a1, inter)
        iou.index_copy_(0, idx, inter / (a1 + a2 - inter))
    return iou


def _iou_index_pairs(params: Tensor, idx1: Tensor, idx2: Tensor) -> Tensor:
    """IoU (float64) of boxes idx1[k] and idx2[k] given their params (N, 8), chunked."""
    out = params.new_empty(idx1.shape[0])
    for s in range(0, idx1.shape[0], _IOU_CHUNK):
        i, j = idx1[s : s + _IOU_CHUNK], idx2[s : s + _IOU_CHUNK]
        out[s : s + _IOU_CHUNK] = _iou_pairs(params.index_select(0, i), params.index_select(0, j))
    return out


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of rotated boxes (cx, cy, w, h, angle_deg).

    Args:
        boxes1 (Tensor[N, 5]), boxes2 (Tensor[M, 5]): on the same device.

    Returns:
        Tensor[N, M] in the dtype of ``boxes1`` (float32 for non-float input). The exact area of
        intersection, computed in float64: where the C++'s float32 hull loses vertices (nearly
        identical or edge-sharing boxes, e.g. detectron2 issue #2167) this gives the true value.
        Pairs where either box has ``w * h < 1e-14`` get 0; identical boxes get exactly 1. Not
        differentiable (like the C++ op).
    """
    n, m = boxes1.shape[0], boxes2.shape[0]
    dtype = boxes1.dtype if boxes1.is_floating_point() else torch.float32
    dev = boxes1.device
    with torch.no_grad():
        if n == 0 or m == 0:
            return torch.zeros((n, m), dtype=dtype, device=dev)
        params1 = _box_params(boxes1.reshape(n, 5))
        params2 = _box_params(boxes2.to(dev).reshape(m, 5))
        ious = torch.empty(n * m, dtype=torch.float64, device=dev)
        for s in range(0, n * m, _IOU_CHUNK):
            flat = torch.arange(s, min(s + _IOU_CHUNK, n * m), device=dev)
            ious[s : s + _IOU_CHUNK] = _iou_pairs(
                params1.index_select(0, flat // m), params2.index_select(0, flat % m)
            )
        return ious.view(n, m).to(dtype)


# ------------------------------------------------------------------------------------------------
# Rotated NMS
# ------------------------------------------------------------------------------------------------

# Boxes per step of the blocked greedy NMS.
_NMS_BLOCK = 256


def _nms_pairs(
    params: Tensor, rows: Tensor, cols: Tensor, only_near: bool, upper: bool
) -> Tuple[Tensor, Tensor]:
    """Local indices (r, c) into rows, cols (sorted by r) of the box pairs that need an IoU.

    With ``only_near``, pairs whose circumscribed circles are disjoint are left out: their IoU is
    0. With ``upper``, only c > r (rows and cols are then the same boxes).
    """
    pr, pc = params.index_select(0, rows), params.index_select(0, cols)
    if only_near:
        dist = torch.cdist(pr[:, :2], pc[:, :2], compute_mode="donot_use_mm_for_euclid_dist")
        # Generous slack: the filter must never drop a pair that the exact IoU would keep.
        near = dist <= (pr[:, 7, None] + pc[None, :, 7]) * (1 + 1e-6) + 1e-6
    else:
        near = torch.ones((rows.shape[0], cols.shape[0]), dtype=torch.bool, device=rows.device)
    if upper:
        near = near.triu(1)
    r, c = near.nonzero(as_tuple=True)
    return r, c


def _suppresses(iou: Tensor, dtype: torch.dtype, threshold: float, strict: bool) -> Tensor:
    # The C++ compares the IoU in the boxes' dtype with a float32 threshold; the CPU kernel
    # suppresses at IoU >= threshold, the CUDA kernel only at IoU > threshold.
    iou = iou.to(dtype) if dtype.is_floating_point else iou
    return iou > threshold if strict else iou >= threshold


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of rotated boxes (cx, cy, w, h, angle_deg), registered as
    ``torch.ops.detectron2.nms_rotated``.

    Args:
        boxes (Tensor[N, 5]), scores (Tensor[N]), iou_threshold: a lower-scored box is dropped when
            its IoU (``box_iou_rotated``) with a kept box is >= iou_threshold for CPU tensors and
            > iou_threshold for CUDA tensors, as in the respective C++ kernels.

    Returns:
        int64 Tensor[K] of indices into ``boxes``, by decreasing score (ties in the order of
        ``torch.sort(scores, descending=True)``, the C++'s sort).
    """
    with torch.no_grad():
        n, dev = boxes.shape[0], boxes.device
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64, device=dev)
        order = torch.sort(scores, descending=True).indices  # the C++'s call, tie order included
        params = _box_params(boxes.index_select(0, order).reshape(n, 5))
        threshold = _float32(iou_threshold)
        strict = boxes.is_cuda
        dtype = boxes.dtype
        # Unless IoU 0 suppresses, only boxes whose circumscribed circles meet interact.
        only_near = threshold >= 0 if strict else threshold > 0
        # Like the C++, compare a box only with boxes kept so far, but a block at a time: first
        # with those kept in earlier blocks, then greedily within the block.
        kept = torch.empty((0,), dtype=torch.int64, device=dev)  # positions in score order
        for b0 in range(0, n, _NMS_BLOCK):
            block = torch.arange(b0, min(n, b0 + _NMS_BLOCK), device=dev)
            if kept.numel() > 0:
                r, c = _nms_pairs(params, kept, block, only_near, upper=False)
                hit = _suppresses(_iou_index_pairs(params, kept[r], block[c]), dtype, threshold,
                                  strict)
                alive = torch.ones(block.shape[0], dtype=torch.bool, device=dev)
                alive[c[hit]] = False
                block = block[alive]
                if block.numel() == 0:
                    continue
            r, c = _nms_pairs(params, block, block, only_near, upper=True)
            hit = _suppresses(_iou_index_pairs(params, block[r], block[c]), dtype, threshold,
                              strict)
            r, c = r[hit], c[hit]
            starts = [0] + torch.bincount(r, minlength=block.shape[0]).cumsum(0).tolist()
            later = c.tolist()
            removed = [False] * block.shape[0]
            survivors: List[int] = []
            for k in range(block.shape[0]):
                if not removed[k]:
                    survivors.append(k)
                    for q in later[starts[k] : starts[k + 1]]:
                        removed[q] = True
            survivors_t = torch.tensor(survivors, dtype=torch.int64, device=dev)
            kept = torch.cat([kept, block[survivors_t]])
        return order[kept]


def _register_nms_rotated() -> Optional["torch.library.Library"]:
    """Defines torch.ops.detectron2.nms_rotated unless it exists (official ops, earlier import)."""
    try:
        torch.ops.detectron2.nms_rotated.default
        return None
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("detectron2", "FRAGMENT")
    lib.define("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor")
    # One Python kernel for every device; the output is an index tensor, so no autograd formula.
    lib.impl("nms_rotated", nms_rotated, "CompositeImplicitAutograd")
    return lib


# The Library object owns the registration: keep it alive, and across importlib.reload.
_NMS_LIBRARY = globals().get("_NMS_LIBRARY") or _register_nms_rotated()


# ------------------------------------------------------------------------------------------------
# Rotated RoIAlign
# ------------------------------------------------------------------------------------------------

# Sample points (about 250 bytes of index/weight temporaries each) handled at once.
_ROI_CHUNK_SAMPLES = 1 << 20


class _RoiSamples:
    """Bilinear sampling points of a group of RoIs, computed exactly as ROIAlignRotated_cpu.cpp.

    Per sample: ``bin`` (flat (roi, ph, pw) index in the group), ``inside`` (S,) (samples outside
    [-1, H] x [-1, W] are 0 / get no gradient), ``pos`` (4, S) flat indices of the 4 neighbours
    into the (B*H*W) pixel stack and ``w`` (4, S) their bilinear weights; ``fwd_count`` (per bin)
    and ``bwd_count`` (per sample): what the forward and backward divide by.
    """

    def __init__(
        self,
        rois: Tensor,
        spatial_scale: float,
        pooled_h: int,
        pooled_w: int,
        sampling_ratio: int,
        height: int,
        width: int,
        dtype: torch.dtype,
    ):
        dev = rois.device
        r = rois.to(dtype)
        scale = _float32(spatial_scale)
        # All in T = dtype, in the C++'s operation order, so float32 results match bit for bit
        # as far as torch's elementwise ops allow.
        center_w = r[:, 1] * scale - 0.5
        center_h = r[:, 2] * scale - 0.5
        roi_w = r[:, 3] * scale
        roi_h = r[:, 4] * scale
        theta = (r[:, 5].to(torch.float64) * math.pi / 180.0).to(dtype)
        # cos/sin of the rounded angle, correctly rounded to T (as libm's cosf/sinf are in
        # practice; torch's float32 kernels may be 1 ulp off).
        cos_t = torch.cos(theta.to(torch.float64)).to(dtype)
        sin_t = torch.sin(theta.to(torch.float64)).to(dtype)
        if bool(((roi_w < 0) | (roi_h < 0)).any()):
            raise RuntimeError("ROIs in ROIAlignRotated do not have non-negative size!")
        bin_h = roi_h / pooled_h
        bin_w = roi_w / pooled_w
        if sampling_ratio > 0:
            grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.int64)
            grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.int64)
        else:  # adaptive: about one sample per feature-map pixel
            grid_h = torch.ceil(roi_h / pooled_h).to(torch.int64)
            grid_w = torch.ceil(roi_w / pooled_w).to(torch.int64)
        start_h = -roi_h / 2.0
        start_w = -roi_w / 2.0

        k = rois.shape[0]
        bins = pooled_h * pooled_w
        per_roi = grid_h * grid_w * bins
        total = int(per_roi.sum())
        roi = torch.repeat_interleave(torch.arange(k, device=dev), per_roi, output_size=total)
        local = torch.arange(total, device=dev) - (per_roi.cumsum(0) - per_roi)[roi]
        gh, gw = grid_h[roi], grid_w[roi]
        ix = local % gw
        iy = (local // gw) % gh
        pbin = local // (gw * gh)  # ph * pooled_w + pw
        ph, pw = pbin // pooled_w, pbin % pooled_w

        bh, bw = bin_h[roi], bin_w[roi]
        yy = start_h[roi] + ph.to(dtype) * bh + (iy.to(dtype) + 0.5) * bh / gh.to(dtype)
        xx = start_w[roi] + pw.to(dtype) * bw + (ix.to(dtype) + 0.5) * bw / gw.to(dtype)
        c, s = cos_t[roi], sin_t[roi]
        y = yy * c - xx * s + center_h[roi]
        x = yy * s + xx * c + center_w[roi]

        # Outside [-1, H] x [-1, W] a sample is 0; inside, it is clamped to the border pixels.
        inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
        y = torch.where(inside, y.clamp(min=0), torch.zeros_like(y))
        x = torch.where(inside, x.clamp(min=0), torch.zeros_like(x))
        y_low, x_low = y.to(torch.int64), x.to(torch.int64)
        y_edge, x_edge = y_low >= height - 1, x_low >= width - 1
        y_low = torch.where(y_edge, torch.full_like(y_low, height - 1), y_low)
        x_low = torch.where(x_edge, torch.full_like(x_low, width - 1), x_low)
        y = torch.where(y_edge, y_low.to(dtype), y)
        x = torch.where(x_edge, x_low.to(dtype), x)
        y_high = torch.where(y_edge, y_low, y_low + 1)
        x_high = torch.where(x_edge, x_low, x_low + 1)
        ly, lx = y - y_low.to(dtype), x - x_low.to(dtype)
        hy, hx = 1.0 - ly, 1.0 - lx
        self.w = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx])

        plane = r[:, 0].to(torch.int64)[roi] * (height * width)  # C++: (int) batch index
        pos = torch.stack(
            [y_low * width + x_low, y_low * width + x_high, y_high * width + x_low,
             y_high * width + x_high]
        )
        self.pos = pos + plane[None]
        self.inside = inside
        self.bin = roi * bins + pbin
        count = (grid_h * grid_w).to(dtype)
        self.fwd_count = count.clamp(min=1).repeat_interleave(bins)  # forward: max(count, 1)
        self.bwd_count = count[roi]  # backward: count (never 0 where there are samples)


def _roi_groups(
    rois: Tensor, pooled_h: int, pooled_w: int, sampling_ratio: int, spatial_scale: float
) -> List[Tuple[int, int]]:
    """Splits the RoIs into consecutive [start, end) groups with a bounded number of samples."""
    k = rois.shape[0]
    if sampling_ratio > 0:
        per_roi = [sampling_ratio * sampling_ratio * pooled_h * pooled_w] * k
    else:
        scale = _float32(spatial_scale)
        wh = (rois[:, 3:5].to(torch.float64) * scale).clamp(min=0)
        per_roi = (
            torch.ceil(wh[:, 0] / pooled_w) * torch.ceil(wh[:, 1] / pooled_h) * pooled_h * pooled_w
        ).tolist()
    limit = _ROI_CHUNK_SAMPLES
    groups, start, acc = [], 0, 0
    for idx, n in enumerate(per_roi):
        if acc > 0 and acc + n > limit:
            groups.append((start, idx))
            start, acc = idx, 0
        acc += n
    if start < k:
        groups.append((start, k))
    return groups


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _sampling_matrix(sm: _RoiSamples, n_bins: int, n_pixels: int, backward: bool) -> Tensor:
    """Sparse (n_bins, n_pixels) matrix of the bilinear weights of the samples inside the map
    (transposed for ``backward``, where each weight is also divided by its bin's sample count).

    One sparse product then does what the C++ does per output element: gather the 4 neighbours
    of every sample, weight them and sum them into the sample's bin (or scatter them back).
    """
    keep = sm.inside.nonzero().squeeze(1)
    rows = sm.bin[keep].repeat_interleave(4)
    cols = sm.pos[:, keep].t().reshape(-1)
    vals = sm.w[:, keep].t().reshape(-1)
    # The indices are in range by construction: skip torch's invariant checks (and its warning).
    if backward:
        vals = vals / sm.bwd_count[keep].repeat_interleave(4)
        return torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, (n_pixels, n_bins),
                                       check_invariants=False)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n_bins, n_pixels),
                                   check_invariants=False)


def roi_align_rotated_forward(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
) -> Tensor:
    """Rotated RoIAlign: average of bilinear samples on a rotated grid per output bin.

    Args:
        input (Tensor[B, C, H, W]): feature maps.
        rois (Tensor[K, 6]): (batch_index, cx, cy, w, h, angle_deg) in image pixels.
        spatial_scale: image -> feature-map scale (rounded to float32 like the C++ argument).
        pooled_height, pooled_width: output bins per RoI.
        sampling_ratio: samples per bin along each axis; <= 0: ceil(roi size / bins) per RoI.

    Returns:
        Tensor[K, C, pooled_height, pooled_width] in the dtype of ``input``.
    """
    b, c, h, w = input.shape
    k = rois.shape[0]
    dtype = _compute_dtype(input.dtype)
    bins = pooled_height * pooled_width
    out = torch.zeros((k * bins, c), dtype=dtype, device=input.device)
    if out.numel() > 0:
        with torch.no_grad():
            # (B*H*W, C): a row holds all channels of a pixel.
            planes = input.to(dtype).permute(0, 2, 3, 1).reshape(b * h * w, c)
            for r0, r1 in _roi_groups(rois, pooled_height, pooled_width, sampling_ratio,
                                      spatial_scale):
                sm = _RoiSamples(rois[r0:r1], spatial_scale, pooled_height, pooled_width,
                                 sampling_ratio, h, w, dtype)
                a = _sampling_matrix(sm, (r1 - r0) * bins, b * h * w, backward=False)
                out[r0 * bins : r1 * bins] = torch.sparse.mm(a, planes) / sm.fwd_count[:, None]
    result = out.view(k, pooled_height, pooled_width, c).permute(0, 3, 1, 2)
    return result.contiguous().to(input.dtype)


def roi_align_rotated_backward(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
) -> Tensor:
    """Gradient of ``roi_align_rotated_forward`` w.r.t. its input.

    Args:
        grad (Tensor[K, C, pooled_height, pooled_width]): gradient of the output (any strides).
        rois, spatial_scale, pooled_height, pooled_width, sampling_ratio: as in the forward.
        batch_size, channels, height, width: shape of the forward's input.

    Returns:
        Tensor[batch_size, channels, height, width] in the dtype of ``grad``: each bin's gradient,
        divided by its sample count, scattered to the 4 bilinear neighbours of every sample inside
        the map.
    """
    dtype = _compute_dtype(grad.dtype)
    n_pixels = batch_size * height * width
    gin = torch.zeros((n_pixels, channels), dtype=dtype, device=grad.device)
    if grad.numel() > 0:
        with torch.no_grad():
            k, bins = rois.shape[0], pooled_height * pooled_width
            g = grad.to(dtype).permute(0, 2, 3, 1).reshape(k * bins, channels)
            for r0, r1 in _roi_groups(rois, pooled_height, pooled_width, sampling_ratio,
                                      spatial_scale):
                sm = _RoiSamples(rois[r0:r1], spatial_scale, pooled_height, pooled_width,
                                 sampling_ratio, height, width, dtype)
                a_t = _sampling_matrix(sm, (r1 - r0) * bins, n_pixels, backward=True)
                gin += torch.sparse.mm(a_t, g[r0 * bins : r1 * bins])
    result = gin.view(batch_size, height, width, channels).permute(0, 3, 1, 2)
    return result.contiguous().to(grad.dtype)


# ------------------------------------------------------------------------------------------------
# Deformable convolution
# ------------------------------------------------------------------------------------------------


def _out_size(size: int, pad: int, dilation: int, kernel: int, stride: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _deform_shape_check(
    input: Tensor, offset: Tensor, grad_output: Optional[Tensor], weight: Tensor, kH: int, kW: int,
    dH: int, dW: int, padH: int, padW: int, dilationH: int, dilationW: int, group: int,
    deformable_group: int,
) -> None:
    """The argument checks of the C++ ``shape_check`` (4D/batched tensors)."""
    if weight.dim() != 4:
        raise RuntimeError(f"4D weight tensor (nOutputPlane,nInputPlane,kH,kW) expected, got "
                           f"{weight.dim()}D")
    if kW <= 0 or kH <= 0 or weight.shape[2] != kH or weight.shape[3] != kW:
        raise RuntimeError(f"kernel size ({kH}, {kW}) is not positive or does not match weight "
                           f"{tuple(weight.shape)}")
    if dW <= 0 or dH <= 0:
        raise RuntimeError(f"stride should be greater than zero, but got dH: {dH} dW: {dW}")
    if dilationW <= 0 or dilationH <= 0:
        raise RuntimeError(f"dilation should be greater than 0, but got dilationH: {dilationH} "
                           f"dilationW: {dilationW}")
    if input.dim() != 4:
        raise RuntimeError(f"3D or 4D input tensor expected but got: {input.dim()}")
    n_in = weight.shape[1] * group
    out_h = _out_size(input.shape[2], padH, dilationH, kH, dH)
    out_w = _out_size(input.shape[3], padW, dilationW, kW, dW)
    if n_in % deformable_group != 0:
        raise RuntimeError("input channels must divide deformable group size")
    if out_h < 1 or out_w < 1:
        raise RuntimeError(f"Output size is too small: {out_h} x {out_w}")
    if input.shape[1] != n_in:
        raise RuntimeError(f"invalid number of input planes, expected: {n_in}, but got: "
                           f"{input.shape[1]}")
    if offset.shape[2] != out_h or offset.shape[3] != out_w:
        raise RuntimeError(f"invalid spatial size of offset, expected {out_h} x {out_w}, got "
                           f"{tuple(offset.shape[2:])}")
    if offset.shape[1] != deformable_group * 2 * kH * kW:
        raise RuntimeError("invalid number of channels of offset")
    if offset.shape[0] != input.shape[0]:
        raise RuntimeError("invalid batch size of offset")
    if grad_output is not None and (
        grad_output.shape[1] != weight.shape[0] or tuple(grad_output.shape[2:]) != (out_h, out_w)
    ):
        raise RuntimeError(f"invalid size of gradOutput {tuple(grad_output.shape)}")


def _batched(*tensors: Tensor) -> List[Tensor]:
    # The v1 C++ functions also take unbatched (C, H, W) tensors.
    return [t.unsqueeze(0) if t.dim() == 3 else t for t in tensors]


def _check_im2col_step(batch: int, im2col_step: int) -> None:
    # The C++ views the batch as (batch / im2col_step, im2col_step); the step does not change the
    # result here, but an indivisible one is an error there.
    if im2col_step <= 0 or batch % im2col_step != 0:
        raise RuntimeError(f"im2col step {im2col_step} must divide the batch size {batch}")


def _deform_conv2d(
    input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor],
    stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
) -> Tensor:
    # torchvision infers groups from weight.shape[1] and deformable groups from offset.shape[1].
    return torchvision.ops.deform_conv2d(
        input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
    )


def _grads(
    fn, inputs: List[Tensor], needed: List[bool], grad_output: Tensor
) -> List[Optional[Tensor]]:
    """Gradients of fn(*inputs) w.r.t. the inputs flagged in ``needed``, via autograd."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(n) for t, n in zip(inputs, needed)]
        out = fn(*leaves)
        wanted = [t for t, n in zip(leaves, needed) if n]
        got = iter(torch.autograd.grad(out, wanted, grad_output.reshape(out.shape)))
    return [next(got) if n else None for n in needed]


def deform_conv_forward(
    input: Tensor, weight: Tensor, offset: Tensor, output: Tensor, columns: Tensor, ones: Tensor,
    kW: int, kH: int, dW: int, dH: int, padW: int, padH: int, dilationW: int, dilationH: int,
    group: int, deformable_group: int, im2col_step: int,
) -> int:
    """Deformable convolution v1; writes the result into ``output``.

    Shapes: input (B, C_in, H, W), weight (C_out, C_in/group, kH, kW), offset (B,
    deformable_group*2*kH*kW, H_out, W_out), output (B, C_out, H_out, W_out) (or all unbatched).
    ``columns`` and ``ones`` are the C++'s scratch buffers, unused. Returns 1 like the C++.
    """
    x, off = _batched(input, offset)
    _deform_shape_check(x, off, None, weight, kH, kW, dH, dW, padH, padW, dilationH, dilationW,
                        group, deformable_group)
    _check_im2col_step(x.shape[0], im2col_step)
    with torch.no_grad():
        out = _deform_conv2d(x, off, weight, None, None, (dH, dW), (padH, padW),
                             (dilationH, dilationW))
        output.copy_(out.view(output.shape))
    return 1


def deform_conv_backward_input(
    input: Tensor, offset: Tensor, gradOutput: Tensor, gradInput: Tensor, gradOffset: Tensor,
    weight: Tensor, columns: Tensor, kW: int, kH: int, dW: int, dH: int, padW: int, padH: int,
    dilationW: int, dilationH: int, group: int, deformable_group: int, im2col_step: int,
) -> int:
    """Gradients of deformable convolution v1 w.r.t. input and offset.

    As in the C++: the input gradient is ADDED to ``gradInput`` (col2im accumulates), the offset
    gradient is WRITTEN to ``gradOffset``. Shapes as in ``deform_conv_forward``; returns 1.
    """
    x, off, go = _batched(input, offset, gradOutput)
    _deform_shape_check(x, off, go, weight, kH, kW, dH, dW, padH, padW, dilationH, dilationW,
                        group, deformable_group)
    _check_im2col_step(x.shape[0], im2col_step)

    def fn(x_, off_, w_):
        return _deform_conv2d(x_, off_, w_, None, None, (dH, dW), (padH, padW),
                              (dilationH, dilationW))

    gx, goff, _ = _grads(fn, [x, off, weight], [True, True, False], go)
    with torch.no_grad():
        gradInput.add_(gx.view(gradInput.shape))
        gradOffset.copy_(goff.view(gradOffset.shape))
    return 1


def deform_conv_backward_filter(
    input: Tensor, offset: Tensor, gradOutput: Tensor, gradWeight: Tensor, columns: Tensor,
    ones: Tensor, kW: int, kH: int, dW: int, dH: int, padW: int, padH: int, dilationW: int,
    dilationH: int, group: int, deformable_group: int, scale: float, im2col_step: int,
) -> int:
    """Gradient of deformable convolution v1 w.r.t. the weight: ``gradWeight += scale * dL/dW``
    (the C++ accumulates). Shapes as in ``deform_conv_forward``; returns 1.
    """
    x, off, go = _batched(input, offset, gradOutput)
    _deform_shape_check(x, off, go, gradWeight, kH, kW, dH, dW, padH, padW, dilationH, dilationW,
                        group, deformable_group)
    _check_im2col_step(x.shape[0], im2col_step)
    # The weight's values do not enter dL/dW; any tensor of its shape will do.
    weight = torch.zeros_like(gradWeight)

    def fn(x_, off_, w_):
        return _deform_conv2d(x_, off_, w_, None, None, (dH, dW), (padH, padW),
                              (dilationH, dilationW))

    _, _, gw = _grads(fn, [x, off, weight], [False, False, True], go)
    with torch.no_grad():
        gradWeight.add_(gw, alpha=scale)
    return 1


def _modulated_check(
    input: Tensor, weight: Tensor, kernel_h: int, kernel_w: int, group: int
) -> None:
    if tuple(weight.shape[2:]) != (kernel_h, kernel_w):
        raise RuntimeError(
            f"Input shape and kernel shape wont match: ({kernel_h} x {kernel_w} vs "
            f"{weight.shape[2]} x {weight.shape[3]})."
        )
    if input.shape[1] != weight.shape[1] * group:
        raise RuntimeError(
            f"Input shape and kernel channels wont match: ({input.shape[1]} vs "
            f"{weight.shape[1] * group})."
        )


def modulated_deform_conv_forward(
    input: Tensor, weight: Tensor, bias: Tensor, ones: Tensor, offset: Tensor, mask: Tensor,
    output: Tensor, columns: Tensor, kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
    pad_h: int, pad_w: int, dilation_h: int, dilation_w: int, group: int, deformable_group: int,
    with_bias: bool,
) -> None:
    """Modulated deformable convolution (v2); writes the result (+ bias if ``with_bias``) into
    ``output``.

    Shapes: input (B, C_in, H, W), weight (C_out, C_in/group, kernel_h, kernel_w), bias (C_out,)
    (ignored unless with_bias), offset (B, deformable_group*2*kh*kw, H_out, W_out), mask (B,
    deformable_group*kh*kw, H_out, W_out), output (B, C_out, H_out, W_out).
    """
    _modulated_check(input, weight, kernel_h, kernel_w, group)
    with torch.no_grad():
        out = _deform_conv2d(input, offset, weight, bias if with_bias else None, mask,
                             (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w))
        output.copy_(out.view(output.shape))


def modulated_deform_conv_backward(
    input: Tensor, weight: Tensor, bias: Tensor, ones: Tensor, offset: Tensor, mask: Tensor,
    columns: Tensor, grad_input: Tensor, grad_weight: Tensor, grad_bias: Tensor,
    grad_offset: Tensor, grad_mask: Tensor, grad_output: Tensor, kernel_h: int, kernel_w: int,
    stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
    group: int, deformable_group: int, with_bias: bool,
) -> None:
    """Gradients of modulated deformable convolution, with the C++'s write semantics:
    ``grad_input``, ``grad_weight`` and (if with_bias) ``grad_bias`` are accumulated into;
    ``grad_offset`` and ``grad_mask`` are overwritten. Shapes as in the forward.
    """
    _modulated_check(input, weight, kernel_h, kernel_w, group)

    def fn(x_, off_, m_, w_, b_):
        return _deform_conv2d(x_, off_, w_, b_ if with_bias else None, m_, (stride_h, stride_w),
                              (pad_h, pad_w), (dilation_h, dilation_w))

    b = bias if with_bias else weight.new_zeros(weight.shape[0])
    gx, goff, gm, gw, gb = _grads(
        fn, [input, offset, mask, weight, b], [True, True, True, True, with_bias], grad_output
    )
    with torch.no_grad():
        grad_input.add_(gx.view(grad_input.shape))
        grad_offset.copy_(goff.view(grad_offset.shape))
        grad_mask.copy_(gm.view(grad_mask.shape))
        grad_weight.add_(gw.view(grad_weight.shape))
        if with_bias:
            grad_bias.add_(gb.view(grad_bias.shape))
