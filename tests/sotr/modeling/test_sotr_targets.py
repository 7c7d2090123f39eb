"""Target assignment details beyond the reference test vector (``shared/specs/sotr.md`` §9)."""
import numpy as np
import torch
from detectron2.structures import BitMasks, Boxes, Instances

from sotr.modeling.targets import _grid_index, build_targets_single, downscale_masks_quarter


def test_grid_index_uses_float32_floor_division():
    # v / L == 1.0 gives S - 1 with the reference's "// (1 / S)" (floor(v * S / L) would give S).
    assert _grid_index(torch.tensor([1.0]), 1, 40).item() == 39
    assert _grid_index(torch.tensor([0.0, 12.0, 12.5]), 100, 8).tolist() == [0, 0, 1]


def test_downscale_follows_two_of_four_rule_on_multiples_of_four():
    rng = np.random.default_rng(0)
    masks = (rng.random((20, 32, 48)) > 0.5).astype(np.uint8)
    out = downscale_masks_quarter(masks)
    assert out.shape == (20, 8, 12)
    inner = masks[:, 1::4, :][:, :, 1::4] + masks[:, 1::4, :][:, :, 2::4]
    inner = inner + masks[:, 2::4, :][:, :, 1::4] + masks[:, 2::4, :][:, :, 2::4]
    np.testing.assert_array_equal(out, (inner >= 2).astype(np.uint8))


def test_downscale_more_masks_than_opencv_channels_at_once():
    rng = np.random.default_rng(1)
    masks = (rng.random((600, 12, 16)) > 0.5).astype(np.uint8)
    out = downscale_masks_quarter(masks)
    np.testing.assert_array_equal(out[550:551], downscale_masks_quarter(masks[550:551]))


def test_collision_keeps_both_masks_and_last_class():
    inst = Instances((64, 64))
    masks = torch.zeros((2, 64, 64), dtype=torch.bool)
    masks[0, 10:40, 10:40] = True
    masks[1, 12:38, 12:38] = True
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10, 40, 40], [12.0, 12, 38, 38]]))
    inst.gt_classes = torch.tensor([0, 1])
    inst.gt_masks = BitMasks(masks)
    (level,) = build_targets_single(inst, (16, 16), [[1, 64]], [4], 0.2, num_classes=3)
    # Both centres of mass fall in cell (1, 1) of the 4x4 grid; each gets its own mask target.
    assert level.grid_order.tolist() == [5, 5]
    assert level.positive.nonzero().flatten().tolist() == [5]
    assert level.cate_label[1, 1].item() == 1
    assert level.mask_targets.shape == (2, 16, 16)
    assert level.mask_targets[0].sum() > level.mask_targets[1].sum()


def test_polygon_masks_are_rasterised_like_bitmasks():
    from detectron2.structures import PolygonMasks

    inst = Instances((40, 48))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 6, 30, 34]]))
    inst.gt_classes = torch.tensor([2])
    polygons = [[[8.0, 6.0, 30.0, 6.0, 30.0, 34.0, 8.0, 34.0]]]
    inst.gt_masks = PolygonMasks(polygons)
    as_bitmask = inst[:]
    as_bitmask.gt_masks = BitMasks.from_polygon_masks(PolygonMasks(polygons), 40, 48)
    args = ((10, 12), [[1, 64]], [5], 0.2, 3)
    (a,), (b,) = build_targets_single(inst, *args), build_targets_single(as_bitmask, *args)
    assert torch.equal(a.cate_label, b.cate_label) and torch.equal(a.mask_targets, b.mask_targets)
    assert a.grid_order.numel() > 0
