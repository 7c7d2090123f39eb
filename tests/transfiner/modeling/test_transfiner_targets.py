"""Every case of ``shared/reference/transfiner/test_vectors.json`` (outputs of the reference functions):
sine positional encoding on the 14x14 and 28x28 grids, and the worked ground-truth example (half-
resolution incoherence map, 28x28 incoherence GT, 28x28 / 14x14 RoI masks, 28x28 boundary band);
plus the semantic-target stretching and the per-GT deduplication of the incoherence targets."""
import json

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from conftest import shared_path
from transfiner.modeling.encoder import sine_position_encoding
from transfiner.modeling.targets import (
    boundary_targets,
    build_targets,
    full_image_masks,
    incoherence_map,
    incoherence_roi_targets,
    semantic_target,
)


def vectors():
    return json.loads(shared_path("reference", "transfiner", "test_vectors.json").read_text())


def grid(rows):
    return torch.tensor([[c == "1" for c in r] for r in rows])


def example():
    case = vectors()["incoherence_gt"]
    h, w = case["image_hw"]
    polygons = PolygonMasks([[np.asarray(p, dtype=np.float64) for p in case["polygon"]]])
    box = torch.tensor([case["box"]], dtype=torch.float32)
    return case, h, w, polygons, box


@pytest.mark.parametrize("size", [14, 28])
def test_transfiner_pos_embed_vectors(size):
    samples = vectors()["pos_embed"][f"grid_{size}x{size}"]
    pos = sine_position_encoding(size, size, num_feats=128)
    assert pos.shape == (256, size, size)
    for s in samples:
        for ch, value in s["channels"].items():
            assert pos[int(ch), s["row"], s["col"]].item() == pytest.approx(value, abs=2e-6), (s["row"], s["col"], ch)


def test_transfiner_half_res_incoherence_map():
    case, h, w, polygons, _ = example()
    q = incoherence_map(full_image_masks(polygons, h, w))
    assert list(q[:, None].shape) == case["half_res_incoherence_map_shape"]
    assert int((q == 1).sum()) == case["half_res_incoherence_map_num_ones"]
    assert int(((q > 0) & (q < 1)).sum()) == case["half_res_incoherence_map_num_fractional"]
    assert q.sum().item() == pytest.approx(case["half_res_incoherence_map_sum"], abs=1e-4)


def test_transfiner_incoherence_28x28():
    case, h, w, polygons, box = example()
    q = incoherence_map(full_image_masks(polygons, h, w))
    got = incoherence_roi_targets(q, torch.zeros(1, dtype=torch.long), box, 28)
    assert torch.equal(got[0], grid(case["incoherence_28x28"]))


@pytest.mark.parametrize("size", [14, 28])
def test_transfiner_roi_masks(size):
    case, _, _, polygons, box = example()
    got = polygons.crop_and_resize(box, size)[0]
    assert torch.equal(got, grid(case[f"mask_{size}x{size}"]))


def test_transfiner_boundary_28x28():
    case, *_ = example()
    got = boundary_targets(grid(case["mask_28x28"])[None])[0]
    assert torch.equal(got, grid(case["boundary_28x28"]))


def test_transfiner_build_targets_matches_vectors_and_dedups():
    case, h, w, polygons, box = example()
    # Three proposals on the same GT (one with gt_index, the same result either way).
    inst = Instances((h, w))
    inst.proposal_boxes = Boxes(box.repeat(3, 1))
    inst.gt_classes = torch.tensor([1, 1, 1])
    inst.gt_masks = polygons[torch.tensor([0, 0, 0])]
    plain = build_targets([inst], (14, 28, 56, 112), 28, (32, 40))
    inst.gt_index = torch.zeros(3, dtype=torch.long)
    deduped = build_targets([inst], (14, 28, 56, 112), 28, (32, 40))
    for t in (plain, deduped):
        assert torch.equal(t.incoherence.bool(), grid(case["incoherence_28x28"])[None].expand(3, -1, -1))
        assert torch.equal(t.boundary.bool()[0], grid(case["boundary_28x28"]))
        assert [m.shape[-1] for m in t.masks] == [14, 28, 56, 112]
        assert t.semantic.shape == (1, 1, 32, 40)


def test_transfiner_semantic_target_is_stretched_onto_padded_grid():
    m = torch.zeros(1, 8, 8)
    m[0, :, :4] = 1  # left half of an 8x8 image ...
    t = semantic_target(m, (4, 6))  # ... stretched onto a padded 4x6 p2 grid (nearest)
    assert t.shape == (1, 1, 4, 6)
    assert torch.equal(t[0, 0, 0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))


def test_transfiner_signed_residue_marks_only_lost_foreground():
    m = torch.zeros(1, 16, 16)
    m[0, 3:9, 5:12] = 1
    signed = incoherence_map(m, abs_residue=False)
    absolute = incoherence_map(m, abs_residue=True)
    assert (signed == 1).sum() < (absolute == 1).sum()
    assert ((signed == 1) <= (absolute == 1)).all()


def test_transfiner_bitmask_gt_gives_the_same_full_masks():
    _, h, w, polygons, _ = example()
    bit = BitMasks.from_polygon_masks(polygons, h, w)
    assert torch.equal(full_image_masks(bit, h, w), full_image_masks(polygons, h, w))
