"""Checks the pure-PyTorch ``detectron2._C`` (tools/detectron2_compat/_C.py, as installed) against
plain reference computations written here from the semantics of Detectron2 v0.6's C++ ops:
per-pair polygon clipping for rotated IoU, brute-force greedy NMS, and per-sample bilinear loops
for rotated RoIAlign and (modulated) deformable convolution. CUDA cases run only where a GPU is.
"""
import importlib
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from detectron2 import _C
from detectron2.layers import (
    DeformConv,
    ModulatedDeformConv,
    ROIAlignRotated,
    batched_nms_rotated,
    nms_rotated,
)
from detectron2.layers.rotated_boxes import pairwise_iou_rotated

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
REPO_C = Path(__file__).resolve().parents[2] / "tools" / "detectron2_compat" / "_C.py"


# ------------------------------------------------------------------------------------------------
# References
# ------------------------------------------------------------------------------------------------


def ref_corners(box):
    """Corners of (cx, cy, w, h, angle_deg); width axis (cos, -sin) in image coordinates (y down).

    Uses box_iou_rotated_utils.h's truncated degree-to-radian constant.
    """
    cx, cy, w, h, a = [float(v) for v in box]
    t = a * 0.01745329251
    u = (math.cos(t) * w / 2, -math.sin(t) * w / 2)  # half width axis
    v = (math.sin(t) * h / 2, math.cos(t) * h / 2)  # half height axis
    return [(cx + sx * u[0] + sy * v[0], cy + sx * u[1] + sy * v[1])
            for sx, sy in [(1, 1), (1, -1), (-1, -1), (-1, 1)]]


def ref_polygon_area(poly):
    return abs(sum(poly[i][0] * poly[i - 1][1] - poly[i - 1][0] * poly[i][1]
                   for i in range(len(poly)))) / 2


def ref_clip(subject, clipper):
    """Sutherland-Hodgman: the part of polygon ``subject`` inside convex polygon ``clipper``."""
    n = len(clipper)
    orient = 1 if sum(clipper[i - 1][0] * clipper[i][1] - clipper[i][0] * clipper[i - 1][1]
                      for i in range(n)) > 0 else -1
    out = list(subject)
    for k in range(n):
        (ax, ay), (bx, by) = clipper[k], clipper[(k + 1) % n]

        def side(p):
            return orient * ((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax))

        pts, out = out, []
        for i in range(len(pts)):
            p, q = pts[i], pts[(i + 1) % len(pts)]
            sp, sq = side(p), side(q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        if not out:
            break
    return out


def ref_iou(b1, b2):
    a1, a2 = float(b1[2]) * float(b1[3]), float(b2[2]) * float(b2[3])
    if a1 < 1e-14 or a2 < 1e-14:
        return 0.0
    # Like the C++, work relative to the midpoint of the two centers (precision far from 0).
    mx, my = (float(b1[0]) + float(b2[0])) / 2, (float(b1[1]) + float(b2[1])) / 2
    b1 = [float(b1[0]) - mx, float(b1[1]) - my] + [float(v) for v in b1[2:]]
    b2 = [float(b2[0]) - mx, float(b2[1]) - my] + [float(v) for v in b2[2:]]
    inter = ref_polygon_area(ref_clip(ref_corners(b1), ref_corners(b2)))
    return inter / (a1 + a2 - inter)


def ref_iou_matrix(boxes1, boxes2):
    return torch.tensor([[ref_iou(p, q) for q in boxes2.tolist()] for p in boxes1.tolist()],
                        dtype=torch.float64).view(len(boxes1), len(boxes2))


def ref_nms(boxes, scores, thr):
    # Visit order of the C++ (ties included): at::sort(scores, descending).
    order = torch.sort(scores, descending=True).indices.tolist()
    removed, keep = set(), []
    for a, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            if j not in removed and ref_iou(boxes[i].tolist(), boxes[j].tolist()) >= thr:
                removed.add(j)
    return keep


def ref_bilinear_roi(img, y, x):
    """ROIAlignRotated's bilinear rule on img (C, H, W) at (y, x), differentiable in img."""
    _, h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return img.new_zeros(img.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * img[:, y0, x0] + (1 - ly) * lx * img[:, y0, x1]
            + ly * (1 - lx) * img[:, y1, x0] + ly * lx * img[:, y1, x1])


def ref_roi_align_rotated(inp, rois, scale, ph, pw, ratio):
    outs = []
    for b, cx, cy, rw, rh, ang in rois.tolist():
        cx, cy, rw, rh = cx * scale - 0.5, cy * scale - 0.5, rw * scale, rh * scale
        c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        bins = []
        for i in range(ph):
            for j in range(pw):
                acc = inp.new_zeros(inp.shape[1])
                for iy in range(gh):
                    for ix in range(gw):
                        yy = -rh / 2 + (i + (iy + 0.5) / gh) * rh / ph
                        xx = -rw / 2 + (j + (ix + 0.5) / gw) * rw / pw
                        acc = acc + ref_bilinear_roi(inp[int(b)], yy * c - xx * s + cy,
                                                     yy * s + xx * c + cx)
                bins.append(acc / max(gh * gw, 1))
        outs.append(torch.stack(bins, 1).view(-1, ph, pw))
    if not outs:
        return inp.new_zeros((0, inp.shape[1], ph, pw))
    return torch.stack(outs)


def ref_bilinear_dcn(img, y, x):
    """Deformable-conv bilinear rule (zero outside (-1, H) x (-1, W), zero corners outside);
    differentiable in img and in the 0-dim tensors y, x."""
    _, h, w = img.shape
    yv, xv = float(y), float(x)
    if not (-1 < yv < h and -1 < xv < w):
        return img.new_zeros(img.shape[0])
    y0, x0 = math.floor(yv), math.floor(xv)
    ly, lx = y - y0, x - x0
    val = img.new_zeros(img.shape[0])
    for dy, wy in [(0, 1 - ly), (1, ly)]:
        for dx, wx in [(0, 1 - lx), (1, lx)]:
            if 0 <= y0 + dy < h and 0 <= x0 + dx < w:
                val = val + wy * wx * img[:, y0 + dy, x0 + dx]
    return val


def ref_deform_conv(x, offset, weight, bias=None, mask=None, stride=1, pad=0, dil=1, groups=1,
                    dgroups=1):
    """Detectron2's deformable im2col + grouped matmul, one sample point at a time."""
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    ho = (h + 2 * pad - (dil * (kh - 1) + 1)) // stride + 1
    wo = (w + 2 * pad - (dil * (kw - 1) + 1)) // stride + 1
    cpg = cin // dgroups
    outs = []
    for b in range(n):
        cols = []  # per (i, j): (cin, ho*wo)
        for i in range(kh):
            for j in range(kw):
                per_group = []
                for g in range(dgroups):
                    base = g * 2 * kh * kw + 2 * (i * kw + j)
                    pts = []
                    for oy in range(ho):
                        for ox in range(wo):
                            yy = oy * stride - pad + i * dil + offset[b, base, oy, ox]
                            xx = ox * stride - pad + j * dil + offset[b, base + 1, oy, ox]
                            v = ref_bilinear_dcn(x[b, g * cpg:(g + 1) * cpg], yy, xx)
                            if mask is not None:
                                v = v * mask[b, g * kh * kw + i * kw + j, oy, ox]
                            pts.append(v)
                    per_group.append(torch.stack(pts, 1))
                cols.append(torch.cat(per_group, 0))
        col = torch.stack(cols, 1)  # (cin, kh*kw, ho*wo)
        cin_g, cout_g = cin // groups, cout // groups
        out = torch.cat([
            weight[g * cout_g:(g + 1) * cout_g].reshape(cout_g, -1)
            @ col[g * cin_g:(g + 1) * cin_g].reshape(cin_g * kh * kw, -1)
            for g in range(groups)
        ])
        if bias is not None:
            out = out + bias[:, None]
        outs.append(out.view(cout, ho, wo))
    return torch.stack(outs)


def random_boxes(n, gen, spread=30.0, dtype=torch.float64):
    return torch.cat([
        torch.rand(n, 2, generator=gen) * spread,
        torch.rand(n, 2, generator=gen) * 12 + 2,
        torch.rand(n, 1, generator=gen) * 360 - 180,
    ], 1).to(dtype)


# ------------------------------------------------------------------------------------------------
# Module surface
# ------------------------------------------------------------------------------------------------


def test_module_surface():
    assert _C.__file__.endswith(".py")
    if REPO_C.exists():
        assert Path(_C.__file__).read_text() == REPO_C.read_text(), (
            "installed detectron2/_C.py is stale: run tools/detectron2_compat/install_detectron2.py"
        )
    for name in ["COCOevalAccumulate", "COCOevalEvaluateImages", "InstanceAnnotation",
                 "ImageEvaluation"]:
        assert not hasattr(_C, name), name
    assert _C.has_cuda() is False
    assert isinstance(_C.get_compiler_version(), str) and isinstance(_C.get_cuda_version(), str)
    for name in ["box_iou_rotated", "roi_align_rotated_forward", "roi_align_rotated_backward",
                 "deform_conv_forward", "deform_conv_backward_input", "deform_conv_backward_filter",
                 "modulated_deform_conv_forward", "modulated_deform_conv_backward"]:
        assert callable(getattr(_C, name)), name


def test_nms_op_registration_survives_reimport():
    boxes = random_boxes(20, torch.Generator().manual_seed(7))
    scores = torch.rand(20, generator=torch.Generator().manual_seed(8))
    before = torch.ops.detectron2.nms_rotated(boxes, scores, 0.3)
    importlib.reload(_C)
    spec = importlib.util.spec_from_file_location("_d2_C_second_copy", _C.__file__)
    second = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(second)  # sees the op registered and leaves it alone
    assert torch.equal(torch.ops.detectron2.nms_rotated(boxes, scores, 0.3), before)


# ------------------------------------------------------------------------------------------------
# box_iou_rotated
# ------------------------------------------------------------------------------------------------


def test_box_iou_rotated_random():
    gen = torch.Generator().manual_seed(0)
    b1, b2 = random_boxes(24, gen), random_boxes(21, gen)
    b2[:5] = b1[:5]  # identical boxes
    b2[5:8, :4] = b1[5:8, :4]  # same boxes, other angles
    b2[8:10] = b1[8:10][:, [0, 1, 3, 2, 4]] + torch.tensor([0, 0, 0, 0, 90.0])
    ref = ref_iou_matrix(b1, b2)
    assert ((ref > 0.05) & (ref < 0.95)).sum() > 20  # plenty of partial overlaps
    got = pairwise_iou_rotated(b1, b2)
    assert got.dtype == torch.float64 and got.shape == (24, 21)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-9)
    assert (got[:5, :5].diagonal() == 1).all()  # identical boxes: exactly 1
    torch.testing.assert_close(got[8:10, 8:10].diagonal(), torch.ones(2, dtype=torch.float64),
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(_C.box_iou_rotated(b2, b1), got.T, rtol=0, atol=1e-12)

    got32 = _C.box_iou_rotated(b1.float(), b2.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ref_iou_matrix(b1.float(), b2.float()), rtol=0,
                               atol=1e-6)


@pytest.mark.parametrize(
    "b1, b2, expected",
    [
        ([5, 5, 4, 2, 30], [5, 5, 4, 2, 30], 1.0),  # identical
        ([5, 5, 4, 2, 0], [5, 5, 2, 4, 90], 1.0),  # same region, 90 degrees apart
        ([5, 5, 4, 2, 10], [5, 5, 4, 2, -170], 1.0),  # 180 degrees apart
        ([0, 0, 2, 2, 0], [10, 0, 2, 2, 45], 0.0),  # disjoint
        ([0, 0, 2, 2, 0], [2, 0, 2, 2, 0], 0.0),  # touching along an edge
        ([0, 0, 2, 2, 0], [2, 2, 2, 2, 0], 0.0),  # touching at a corner
        ([0, 0, 4, 2, 0], [1, 0, 2, 2, 0], 0.5),  # sharing two edges, same side
        ([3, 1, 1, 3, 45], [3, 1, 1, 4, 45], 0.75),  # nested, collinear edges (v0.6 C++: 0.27)
        ([0, 0, 4, 1, 0], [0, 0, 4, 1, 90], 1 / 7),  # a plus sign
        ([0, 0, 4, 4, 30], [0.5, 0, 1, 1, -20], 1 / 16),  # nested
        ([0, 0, 2, 2, 0], [0, 0, 2, 2, 45], (8 * (2 ** 0.5 - 1)) / (8 - 8 * (2 ** 0.5 - 1))),
        ([0, 0, 0, 2, 0], [0, 0, 0, 2, 0], 0.0),  # zero width
        ([0, 0, 1e-8, 1e-7, 0], [0, 0, 1e-8, 1e-7, 0], 0.0),  # area below 1e-14
        # far from the origin, shifted by 1 along the width axis (cos a, -sin a)
        ([1e4, 1e4, 3, 2, 20], [1e4 + math.cos(math.radians(20)),
                                1e4 - math.sin(math.radians(20)), 3, 2, 20], 0.5),
    ],
)
def test_box_iou_rotated_cases(b1, b2, expected):
    b1, b2 = torch.tensor([b1], dtype=torch.float64), torch.tensor([b2], dtype=torch.float64)
    got = _C.box_iou_rotated(b1, b2)
    # The ideal value up to ~1e-9: the C++'s truncated pi/180 turns a box by ~1e-11 rad per degree.
    assert abs(float(got) - expected) < 1e-8
    assert abs(float(got) - ref_iou(b1[0].tolist(), b2[0].tolist())) < 1e-9


def test_box_iou_rotated_float32_precision():
    # detectron2 issue #2167: nearly identical large float32 boxes; the C++ computes in float32
    # and returns 0.57. Here the float32 inputs are evaluated in float64.
    b1 = torch.tensor([[2563.7446, 1436.7902, 2174.7034, 214.09500, 115.118347]])
    b2 = torch.tensor([[2563.7446, 1436.7903, 2174.7029, 214.09496, 115.118355]])
    got = _C.box_iou_rotated(b1, b2)
    assert got.dtype == torch.float32
    assert abs(float(got) - ref_iou(b1[0].tolist(), b2[0].tolist())) < 1e-6
    assert float(got) > 0.9999


def test_box_iou_rotated_lattice():
    # Integer boxes at multiples of 45 degrees: many shared, collinear and touching edges.
    gen = torch.Generator().manual_seed(14)
    boxes = torch.cat([
        torch.randint(0, 5, (40, 2), generator=gen), torch.randint(1, 5, (40, 2), generator=gen),
        torch.randint(-2, 3, (40, 1), generator=gen) * 45,
    ], 1).double()
    torch.testing.assert_close(_C.box_iou_rotated(boxes, boxes), ref_iou_matrix(boxes, boxes),
                               rtol=0, atol=1e-9)


def test_box_iou_rotated_empty():
    boxes = random_boxes(3, torch.Generator().manual_seed(1), dtype=torch.float32)
    empty = boxes[:0]
    assert _C.box_iou_rotated(empty, boxes).shape == (0, 3)
    assert _C.box_iou_rotated(boxes, empty).shape == (3, 0)
    assert _C.box_iou_rotated(boxes, empty).dtype == torch.float32


# ------------------------------------------------------------------------------------------------
# nms_rotated
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("thr", [0.1, 0.3, 0.5, 0.75])
def test_nms_rotated_matches_greedy(thr):
    gen = torch.Generator().manual_seed(2)
    boxes = random_boxes(60, gen, spread=25.0)
    boxes[40:45] = boxes[:5]  # exact duplicates: IoU 1
    scores = torch.rand(60, generator=gen, dtype=torch.float64)
    scores[50:55] = scores[0]  # ties
    keep = nms_rotated(boxes, scores, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == ref_nms(boxes, scores, thr)
    assert torch.equal(torch.ops.detectron2.nms_rotated(boxes, scores, thr), keep)
    assert (scores[keep][1:] <= scores[keep][:-1]).all()
    k32 = nms_rotated(boxes.float(), scores.float(), thr)
    assert k32.tolist() == ref_nms(boxes.float(), scores.float(), thr)


def test_nms_rotated_across_blocks(monkeypatch):
    # Small blocks: suppression by boxes kept in earlier blocks, and within a block.
    monkeypatch.setattr(_C, "_NMS_BLOCK", 7)
    gen = torch.Generator().manual_seed(15)
    boxes = random_boxes(80, gen, spread=25.0)
    scores = torch.rand(80, generator=gen, dtype=torch.float64)
    for thr in (0.0, 0.2, 0.6):
        assert nms_rotated(boxes, scores, thr).tolist() == ref_nms(boxes, scores, thr)


def test_nms_rotated_threshold_semantics():
    box = torch.tensor([[5.0, 5, 4, 2, 20]])
    boxes = torch.cat([box, box, box + torch.tensor([[30.0, 0, 0, 0, 0]])])
    scores = torch.tensor([0.5, 0.9, 0.1])
    # CPU kernel: suppressed when IoU >= threshold, so IoU 1 at threshold 1 suppresses.
    assert nms_rotated(boxes, scores, 1.0).tolist() == [1, 2]
    # Threshold 0: even disjoint boxes (IoU 0) are suppressed.
    assert nms_rotated(boxes, scores, 0.0).tolist() == [1]
    empty = nms_rotated(boxes[:0], scores[:0], 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)


def test_batched_nms_rotated():
    gen = torch.Generator().manual_seed(3)
    boxes = random_boxes(40, gen, spread=20.0, dtype=torch.float32)
    scores = torch.rand(40, generator=gen)
    idxs = torch.randint(0, 3, (40,), generator=gen)
    keep = batched_nms_rotated(boxes, scores, idxs, 0.4)
    expected = []
    for c in range(3):
        sel = (idxs == c).nonzero().squeeze(1)
        expected += sel[ref_nms(boxes[sel], scores[sel], 0.4)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert (scores[keep][1:] <= scores[keep][:-1]).all()


# ------------------------------------------------------------------------------------------------
# roi_align_rotated
# ------------------------------------------------------------------------------------------------

ROIS = [
    [0, 6.0, 5.0, 6.0, 4.0, 0.0],
    [1, 10.3, 7.7, 9.5, 5.2, 33.0],
    [0, 8.1, 6.2, 7.0, 3.0, 90.0],  # 90 degrees
    [1, 1.2, 13.4, 8.0, 6.0, -120.0],  # partly outside the image
    [0, 19.0, -1.0, 5.0, 9.0, 15.0],  # mostly outside
    [1, 5.5, 6.5, 0.0, 3.0, 10.0],  # zero width: no samples with sampling_ratio 0
]


@pytest.mark.parametrize("ratio", [0, 2])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_roi_align_rotated(ratio, scale):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 10, generator=gen, dtype=torch.float64)
    rois = torch.tensor(ROIS, dtype=torch.float64)
    ref = ref_roi_align_rotated(x, rois, scale, 3, 2, ratio)
    got = _C.roi_align_rotated_forward(x, rois, scale, 3, 2, ratio)
    assert got.shape == (6, 3, 3, 2)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    got32 = _C.roi_align_rotated_forward(x.float(), rois.float(), scale, 3, 2, ratio)
    torch.testing.assert_close(got32.double(), ref, rtol=0, atol=1e-5)

    # Backward against autograd through the reference, via Detectron2's own module.
    xr = x.clone().requires_grad_(True)
    grad_out = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (ref_grad,) = torch.autograd.grad(ref_roi_align_rotated(xr, rois, scale, 3, 2, ratio),
                                      xr, grad_out)
    out = ROIAlignRotated((3, 2), scale, ratio)(xr, rois)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    (got_grad,) = torch.autograd.grad(out, xr, grad_out)
    torch.testing.assert_close(got_grad, ref_grad, rtol=0, atol=1e-12)
    # Non-contiguous gradients are read by their strides.
    nc = grad_out.transpose(2, 3).contiguous().transpose(2, 3)
    direct = _C.roi_align_rotated_backward(nc, rois, scale, 3, 2, 2, 3, 8, 10, ratio)
    torch.testing.assert_close(direct, ref_grad, rtol=0, atol=1e-12)


def test_roi_align_rotated_gradcheck():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 2.3, 2.1, 3.1, 2.4, 25.0], [1, 4.2, 1.7, 4.4, 3.3, -70.0]],
                        dtype=torch.float64)
    for ratio in (0, 2):
        layer = ROIAlignRotated((2, 2), 1.0, ratio)
        assert torch.autograd.gradcheck(lambda t: layer(t, rois), (x,), eps=1e-6, atol=1e-9)


def test_roi_align_rotated_edge_cases():
    x = torch.randn(1, 4, 6, 6)
    out = _C.roi_align_rotated_forward(x, x.new_zeros((0, 6)), 1.0, 2, 2, 0)
    assert out.shape == (0, 4, 2, 2)
    grad = _C.roi_align_rotated_backward(out, x.new_zeros((0, 6)), 1.0, 2, 2, 1, 4, 6, 6, 0)
    assert grad.shape == (1, 4, 6, 6) and not grad.any()
    with pytest.raises(RuntimeError, match="non-negative size"):
        _C.roi_align_rotated_forward(x, torch.tensor([[0, 3.0, 3, -1, 2, 0]]), 1.0, 2, 2, 0)


# ------------------------------------------------------------------------------------------------
# Deformable convolution
# ------------------------------------------------------------------------------------------------

DCN_CONFIGS = [
    # (batch, cin, cout, h, w, k, stride, pad, dil, groups, dgroups)
    (2, 4, 4, 5, 5, 3, 1, 1, 1, 2, 2),
    (1, 2, 3, 6, 5, 2, 2, 1, 2, 1, 1),
]


def dcn_inputs(cfg, gen, modulated):
    n, cin, cout, h, w, k, s, p, d, g, dg = cfg
    ho = (h + 2 * p - (d * (k - 1) + 1)) // s + 1
    wo = (w + 2 * p - (d * (k - 1) + 1)) // s + 1
    x = torch.randn(n, cin, h, w, generator=gen, dtype=torch.float64)
    # Offsets up to +-2.5 px, so that some samples fall off the map.
    offset = (torch.rand(n, dg * 2 * k * k, ho, wo, generator=gen, dtype=torch.float64) - 0.5) * 5
    weight = torch.randn(cout, cin // g, k, k, generator=gen, dtype=torch.float64)
    mask = torch.rand(n, dg * k * k, ho, wo, generator=gen, dtype=torch.float64)
    mask = mask if modulated else None
    bias = torch.randn(cout, generator=gen, dtype=torch.float64) if modulated else None
    return x, offset, weight, mask, bias


class _DCN(torch.autograd.Function):
    """Detectron2's _DeformConv CUDA code path, run on any device through _C."""

    @staticmethod
    def forward(ctx, x, offset, weight, s, p, d, g, dg):
        ctx.save_for_backward(x, offset, weight)
        ctx.conf = (s, p, d, g, dg)
        k_h, k_w = weight.shape[2:]
        ho = (x.shape[2] + 2 * p - (d * (k_h - 1) + 1)) // s + 1
        wo = (x.shape[3] + 2 * p - (d * (k_w - 1) + 1)) // s + 1
        out = x.new_empty(x.shape[0], weight.shape[0], ho, wo)
        assert _C.deform_conv_forward(x, weight, offset, out, x.new_empty(0), x.new_empty(0),
                                      k_w, k_h, s, s, p, p, d, d, g, dg, x.shape[0]) == 1
        return out

    @staticmethod
    def backward(ctx, grad):
        x, offset, weight = ctx.saved_tensors
        s, p, d, g, dg = ctx.conf
        k_h, k_w = weight.shape[2:]
        gx, goff, gw = torch.zeros_like(x), torch.zeros_like(offset), torch.zeros_like(weight)
        _C.deform_conv_backward_input(x, offset, grad, gx, goff, weight, x.new_empty(0), k_w, k_h,
                                      s, s, p, p, d, d, g, dg, 1)
        _C.deform_conv_backward_filter(x, offset, grad, gw, x.new_empty(0), x.new_empty(0), k_w,
                                       k_h, s, s, p, p, d, d, g, dg, 1.0, 1)
        return gx, goff, gw, None, None, None, None, None


class _MDCN(torch.autograd.Function):
    """Detectron2's _ModulatedDeformConv code path, run on any device through _C."""

    @staticmethod
    def forward(ctx, x, offset, mask, weight, bias, s, p, d, g, dg):
        ctx.save_for_backward(x, offset, mask, weight, bias)
        ctx.conf = (s, p, d, g, dg)
        k = weight.shape[2]
        ho = (x.shape[2] + 2 * p - (d * (k - 1) + 1)) // s + 1
        wo = (x.shape[3] + 2 * p - (d * (k - 1) + 1)) // s + 1
        out = x.new_empty(x.shape[0], weight.shape[0], ho, wo)
        _C.modulated_deform_conv_forward(x, weight, bias, x.new_empty(0), offset, mask, out,
                                         x.new_empty(0), k, k, s, s, p, p, d, d, g, dg, True)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, offset, mask, weight, bias = ctx.saved_tensors
        s, p, d, g, dg = ctx.conf
        k = weight.shape[2]
        grads = [torch.zeros_like(t) for t in (x, weight, bias, offset, mask)]
        _C.modulated_deform_conv_backward(x, weight, bias, x.new_empty(0), offset, mask,
                                          x.new_empty(0), *grads, grad, k, k, s, s, p, p, d, d,
                                          g, dg, True)
        gx, gw, gb, goff, gm = grads
        return gx, goff, gm, gw, gb, None, None, None, None, None


@pytest.mark.parametrize("cfg", DCN_CONFIGS)
def test_deform_conv(cfg):
    gen = torch.Generator().manual_seed(6)
    n, cin, cout, h, w, k, s, p, d, g, dg = cfg
    x, offset, weight, _, _ = dcn_inputs(cfg, gen, modulated=False)
    leaves = [t.clone().requires_grad_(True) for t in (x, offset, weight)]
    ref = ref_deform_conv(*leaves, stride=s, pad=p, dil=d, groups=g, dgroups=dg)
    grad_out = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_gx, ref_goff, ref_gw = torch.autograd.grad(ref, leaves, grad_out)

    out = torch.full(ref.shape, float("nan"), dtype=torch.float64)
    _C.deform_conv_forward(x, weight, offset, out, x.new_empty(0), x.new_empty(0), k, k, s, s, p,
                           p, d, d, g, dg, 1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    # float32 through the same entry point
    out32 = torch.empty(ref.shape)
    _C.deform_conv_forward(x.float(), weight.float(), offset.float(), out32, x.new_empty(0),
                           x.new_empty(0), k, k, s, s, p, p, d, d, g, dg, n)
    torch.testing.assert_close(out32.double(), ref, rtol=0, atol=1e-4)

    # Write semantics of the C++: grad input and weight accumulate, grad offset is overwritten.
    gx, goff, gw = torch.ones_like(x), torch.full_like(offset, 7.0), torch.ones_like(weight)
    _C.deform_conv_backward_input(x, offset, grad_out, gx, goff, weight, x.new_empty(0), k, k, s,
                                  s, p, p, d, d, g, dg, 1)
    _C.deform_conv_backward_filter(x, offset, grad_out, gw, x.new_empty(0), x.new_empty(0), k, k,
                                   s, s, p, p, d, d, g, dg, 0.5, 1)
    torch.testing.assert_close(gx, 1 + ref_gx, rtol=0, atol=1e-10)
    torch.testing.assert_close(goff, ref_goff, rtol=0, atol=1e-10)
    torch.testing.assert_close(gw, 1 + 0.5 * ref_gw, rtol=0, atol=1e-10)

    if dg == 1:  # Detectron2's CPU path (torchvision directly) agrees with _C
        layer = DeformConv(cin, cout, k, stride=s, padding=p, dilation=d, groups=g).double()
        with torch.no_grad():
            layer.weight.copy_(weight)
            torch.testing.assert_close(layer(x, offset), out, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfg", DCN_CONFIGS)
def test_modulated_deform_conv(cfg):
    gen = torch.Generator().manual_seed(9)
    n, cin, cout, h, w, k, s, p, d, g, dg = cfg
    x, offset, weight, mask, bias = dcn_inputs(cfg, gen, modulated=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, offset, mask, weight, bias)]
    lx, loff, lm, lw, lb = leaves
    ref = ref_deform_conv(lx, loff, lw, lb, lm, stride=s, pad=p, dil=d, groups=g, dgroups=dg)
    grad_out = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, leaves, grad_out)

    e = x.new_empty(0)
    for with_bias in (True, False):
        out = torch.full(ref.shape, float("nan"), dtype=torch.float64)
        _C.modulated_deform_conv_forward(x, weight, bias if with_bias else e.new_empty(1), e,
                                         offset, mask, out, e, k, k, s, s, p, p, d, d, g, dg,
                                         with_bias)
        expected = ref if with_bias else ref - bias.view(1, -1, 1, 1)
        torch.testing.assert_close(out, expected.detach(), rtol=0, atol=1e-10)

    # Accumulated: input, weight, bias. Overwritten: offset, mask.
    gx, gw, gb = torch.ones_like(x), torch.ones_like(weight), torch.ones_like(bias)
    goff, gm = torch.full_like(offset, 7.0), torch.full_like(mask, 7.0)
    _C.modulated_deform_conv_backward(x, weight, bias, e, offset, mask, e, gx, gw, gb, goff, gm,
                                      grad_out, k, k, s, s, p, p, d, d, g, dg, True)
    r_gx, r_goff, r_gm, r_gw, r_gb = ref_grads
    for got, want in [(gx, 1 + r_gx), (gw, 1 + r_gw), (gb, 1 + r_gb), (goff, r_goff),
                      (gm, r_gm)]:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    gb_unused = torch.full_like(bias, 3.0)
    _C.modulated_deform_conv_backward(x, weight, bias, e, offset, mask, e, torch.zeros_like(x),
                                      torch.zeros_like(weight), gb_unused, goff, gm, grad_out, k,
                                      k, s, s, p, p, d, d, g, dg, False)
    assert (gb_unused == 3.0).all()


def test_deform_conv_gradcheck():
    gen = torch.Generator().manual_seed(10)
    cfg = (1, 2, 2, 4, 4, 2, 1, 1, 1, 1, 2)
    x, offset, weight, mask, bias = dcn_inputs(cfg, gen, modulated=True)
    args = [t.requires_grad_(True) for t in (x, offset, weight)]
    assert torch.autograd.gradcheck(lambda *t: _DCN.apply(*t, 1, 1, 1, 1, 2), args, eps=1e-6,
                                    atol=1e-7)
    margs = [t.requires_grad_(True) for t in (x, offset, mask, weight, bias)]
    assert torch.autograd.gradcheck(lambda *t: _MDCN.apply(*t, 1, 1, 1, 1, 2), margs, eps=1e-6,
                                    atol=1e-7)


def test_deform_conv_shape_checks():
    x = torch.randn(2, 4, 5, 5)
    weight = torch.randn(4, 4, 3, 3)
    out = torch.empty(2, 4, 5, 5)
    e = x.new_empty(0)
    with pytest.raises(RuntimeError, match="offset"):
        _C.deform_conv_forward(x, weight, torch.zeros(2, 17, 5, 5), out, e, e, 3, 3, 1, 1, 1, 1,
                               1, 1, 1, 1, 2)
    with pytest.raises(RuntimeError, match="im2col"):
        _C.deform_conv_forward(x, weight, torch.zeros(2, 18, 5, 5), out, e, e, 3, 3, 1, 1, 1, 1,
                               1, 1, 1, 1, 3)
    with pytest.raises(RuntimeError, match="kernel channels"):
        _C.modulated_deform_conv_forward(x, weight, e, e, torch.zeros(2, 18, 5, 5),
                                         torch.zeros(2, 9, 5, 5), out, e, 3, 3, 1, 1, 1, 1, 1, 1,
                                         2, 1, False)


# ------------------------------------------------------------------------------------------------
# CUDA: Detectron2's wrappers take their CUDA code paths through _C
# ------------------------------------------------------------------------------------------------


@CUDA
def test_cuda_rotated_boxes():
    gen = torch.Generator().manual_seed(11)
    b1, b2 = random_boxes(30, gen), random_boxes(20, gen)
    torch.testing.assert_close(pairwise_iou_rotated(b1.cuda(), b2.cuda()).cpu(),
                               ref_iou_matrix(b1, b2), rtol=0, atol=1e-9)
    scores = torch.rand(30, generator=gen, dtype=torch.float64)
    assert nms_rotated(b1.cuda(), scores.cuda(), 0.3).tolist() == ref_nms(b1, scores, 0.3)
    # The CUDA kernel suppresses only at IoU > threshold.
    dup = torch.tensor([[5.0, 5, 4, 2, 20]] * 2, device="cuda")
    assert nms_rotated(dup, torch.tensor([0.2, 0.9], device="cuda"), 1.0).tolist() == [1, 0]


@CUDA
def test_cuda_roi_align_rotated():
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(2, 3, 8, 10, generator=gen, dtype=torch.float64)
    rois = torch.tensor(ROIS, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    ref = ref_roi_align_rotated(xr, rois, 0.5, 3, 2, 0)
    grad_out = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (ref_grad,) = torch.autograd.grad(ref, xr, grad_out)
    xc = x.cuda().requires_grad_(True)
    out = ROIAlignRotated((3, 2), 0.5, 0)(xc, rois.cuda())
    torch.testing.assert_close(out.detach().cpu(), ref.detach(), rtol=0, atol=1e-12)
    (got,) = torch.autograd.grad(out, xc, grad_out.cuda())
    torch.testing.assert_close(got.cpu(), ref_grad, rtol=0, atol=1e-12)


@CUDA
@pytest.mark.parametrize("modulated", [False, True])
def test_cuda_deform_conv_modules(modulated):
    gen = torch.Generator().manual_seed(13)
    cfg = DCN_CONFIGS[0]
    n, cin, cout, h, w, k, s, p, d, g, dg = cfg
    x, offset, weight, mask, bias = dcn_inputs(cfg, gen, modulated)
    leaves = [t.clone().requires_grad_(True) for t in (x, offset, weight)]
    if modulated:
        leaves += [t.clone().requires_grad_(True) for t in (mask, bias)]
        ref = ref_deform_conv(leaves[0], leaves[1], leaves[2], leaves[4], leaves[3], stride=s,
                              pad=p, dil=d, groups=g, dgroups=dg)
        layer = ModulatedDeformConv(cin, cout, k, stride=s, padding=p, dilation=d, groups=g,
                                    deformable_groups=dg, bias=True)
    else:
        ref = ref_deform_conv(*leaves, stride=s, pad=p, dil=d, groups=g, dgroups=dg)
        layer = DeformConv(cin, cout, k, stride=s, padding=p, dilation=d, groups=g,
                           deformable_groups=dg)
    grad_out = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, leaves, grad_out)
    layer = layer.double().cuda()
    with torch.no_grad():
        layer.weight.copy_(weight)
        if modulated:
            layer.bias.copy_(bias)
    xc, offc = x.cuda().requires_grad_(True), offset.cuda().requires_grad_(True)
    inputs = [xc, offc]
    if modulated:
        mc = mask.cuda().requires_grad_(True)
        out = layer(xc, offc, mc)
        inputs.append(mc)
    else:
        out = layer(xc, offc)
    torch.testing.assert_close(out.detach().cpu(), ref.detach(), rtol=0, atol=1e-10)
    params = [layer.weight] + ([layer.bias] if modulated else [])
    got = torch.autograd.grad(out, inputs + params, grad_out.cuda())
    want = ref_grads[:2] + ((ref_grads[3], ref_grads[2], ref_grads[4]) if modulated
                            else (ref_grads[2],))
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=1e-10)
