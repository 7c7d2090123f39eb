"""Every case of ``shared/reference/sotr/test_vectors.json`` (outputs of the official SOTR functions):
floats within 1e-5, integers and binary masks exactly (``shared/specs/sotr.md`` §19)."""
import json
from typing import List

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Boxes, Instances

from conftest import shared_path
from sotr.modeling.heads import resize_to_grids, split_feats
from sotr.modeling.losses import sotr_losses
from sotr.modeling.matrix_nms import matrix_nms, point_nms
from sotr.modeling.postprocessing import InferenceParams, inference_single_image
from sotr.modeling.targets import build_targets, center_of_mass, downscale_masks_quarter
from sotr.modeling.twin_transformer import TwinTransformer

ATOL = 1e-5


@pytest.fixture(scope="module")
def vectors():
    with open(shared_path("reference", "sotr", "test_vectors.json")) as f:
        return json.load(f)


def masks_of(rows_per_mask: List[List[str]]) -> torch.Tensor:
    """Lists of '0'/'1' row strings -> (M, H, W) bool."""
    return torch.tensor([[[c == "1" for c in row] for row in rows] for rows in rows_per_mask])


def rows_of(mask: torch.Tensor) -> List[str]:
    return ["".join("1" if v else "0" for v in row) for row in mask.tolist()]


def test_point_nms(vectors):
    case = vectors["point_nms"]
    out = point_nms(torch.tensor(case["input_scores"]))
    torch.testing.assert_close(out, torch.tensor(case["output"]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kernel, key", [("gaussian", "gaussian_sigma2"), ("linear", "linear")])
def test_matrix_nms(vectors, kernel, key):
    case = vectors["matrix_nms"]
    masks = masks_of(case["masks"])
    areas = masks.sum((1, 2)).float()
    labels, scores = torch.tensor(case["labels"]), torch.tensor(case["scores"])
    scores = matrix_nms(labels, masks, areas, scores, sigma=2, kernel=kernel)
    torch.testing.assert_close(scores, torch.tensor(case[key]), atol=ATOL, rtol=0)


def test_center_of_mass(vectors):
    case = vectors["center_of_mass"]
    cx, cy = center_of_mass(masks_of(case["masks"]))
    torch.testing.assert_close(cx, torch.tensor(case["center_x"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(cy, torch.tensor(case["center_y"]), atol=ATOL, rtol=0)


def test_mask_rescale_quarter(vectors):
    case = vectors["mask_rescale_quarter"]
    out = downscale_masks_quarter(masks_of([case["input"]]).numpy().astype(np.uint8))
    assert list(out.shape[1:]) == case["output_hw"]
    assert rows_of(torch.from_numpy(out[0])) == case["output"]


def test_twin_transformer_small(vectors):
    case = vectors["twin_transformer_small"]
    hyper = case["hyper"]
    assert hyper["dim"] == hyper["heads"] * hyper["dim_head"]
    assert not hyper["positional_embedding"] and not hyper["reversible"]
    model = TwinTransformer(dim=hyper["dim"], depth=hyper["depth"], heads=hyper["heads"])
    state = {k: torch.tensor(v) for k, v in case["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = model(torch.tensor(case["input_NCHW"]))
    torch.testing.assert_close(out, torch.tensor(case["output_NCHW"]), atol=ATOL, rtol=0)


def test_split_and_grid_resize(vectors):
    case = vectors["split_and_grid_resize"]
    feats = [torch.tensor(case[k]) for k in ("p2", "p3", "p4", "p5", "p6")]
    split = split_feats(feats)
    for ours, ref in zip(split, case["after_split"]):
        torch.testing.assert_close(ours, torch.tensor(ref), atol=ATOL, rtol=0)
    for ours, ref in zip(resize_to_grids(split, case["grids"]), case["after_grid_resize"]):
        torch.testing.assert_close(ours, torch.tensor(ref), atol=ATOL, rtol=0)


def test_ground_truth_and_loss(vectors):
    case = vectors["ground_truth_and_loss"]
    hyper = case["hyper"]
    gt = []
    for image in case["images"]:
        inst = Instances(tuple(image["image_hw"]))
        inst.gt_boxes = Boxes(torch.tensor(image["gt_boxes_xyxy"]))
        inst.gt_classes = torch.tensor(image["gt_classes"])
        inst.gt_masks = BitMasks(masks_of(image["gt_masks"]))
        gt.append(inst)
    mask_hw = tuple(case["mask_feature_hw"])
    assert [4 * s for s in mask_hw] == case["padded_batch_hw"]
    targets = build_targets(
        gt, mask_hw, hyper["FPN_SCALE_RANGES"], hyper["NUM_GRIDS"], hyper["SIGMA"], hyper["NUM_CLASSES"]
    )

    for image, per_level in zip(case["images"], targets):
        for ref, ours in zip(image["levels"], per_level):
            assert ours.cate_label.tolist() == ref["cate_label"]
            assert ours.grid_order.tolist() == ref["grid_order"]
            assert ours.positive.nonzero().flatten().tolist() == ref["positive_cells"]
            assert ours.mask_targets.shape[0] == len(ref["mask_targets"])
            for mask, ref_mask in zip(ours.mask_targets, ref["mask_targets"]):
                assert rows_of(mask) == ref_mask

    losses = sotr_losses(
        [torch.tensor(c) for c in case["cate_logits_per_level_NCSS"]],
        [torch.tensor(k) for k in case["kernel_preds_per_level_NDSS"]],
        torch.tensor(case["mask_features_NDHW"]),
        targets,
        num_classes=hyper["NUM_CLASSES"],
        focal_alpha=hyper["FOCAL_ALPHA"],
        focal_gamma=hyper["FOCAL_GAMMA"],
        focal_weight=hyper["FOCAL_WEIGHT"],
        dice_weight=hyper["DICE_WEIGHT"],
    )
    assert abs(losses["loss_ins"].item() - case["loss_ins"]) < ATOL
    assert abs(losses["loss_cate"].item() - case["loss_cate"]) < ATOL


@pytest.mark.parametrize("boxes_from_masks", [False, True])
def test_inference(vectors, boxes_from_masks):
    case = vectors["inference"]
    hyper = case["hyper"]
    params = InferenceParams(
        num_grids=hyper["NUM_GRIDS"],
        strides=hyper["FPN_INSTANCE_STRIDES"],
        score_thr=hyper["SCORE_THR"],
        mask_thr=hyper["MASK_THR"],
        nms_pre=hyper["NMS_PRE"],
        nms_type=hyper["NMS_TYPE"],
        nms_kernel=hyper["NMS_KERNEL"],
        nms_sigma=hyper["NMS_SIGMA"],
        update_thr=hyper["UPDATE_THR"],
        max_per_img=hyper["MAX_PER_IMG"],
        boxes_from_masks=boxes_from_masks,
    )
    k, d = hyper["NUM_CLASSES"], hyper["NUM_KERNELS"]
    logits = [torch.tensor(c) for c in case["cate_logits_per_level_NCSS"]]
    scores = torch.cat([point_nms(c.sigmoid()).permute(0, 2, 3, 1)[0].reshape(-1, k) for c in logits])
    kernels = [torch.tensor(x)[0] for x in case["kernel_preds_per_level_NDSS"]]
    kernels = torch.cat([x.permute(1, 2, 0).reshape(-1, d) for x in kernels])
    out = inference_single_image(
        scores,
        kernels,
        torch.tensor(case["mask_features_NDHW"])[0],
        tuple(case["resized_image_hw"]),
        tuple(case["original_image_hw"]),
        params,
    )
    expected = case["expected"]
    assert out.image_size == tuple(case["original_image_hw"])
    torch.testing.assert_close(out.scores, torch.tensor(expected["scores"]), atol=ATOL, rtol=0)
    assert out.pred_classes.tolist() == expected["pred_classes"]
    assert out.pred_masks.sum((1, 2)).tolist() == expected["mask_areas"]
    for mask, ref in zip(out.pred_masks, expected["pred_masks"]):
        assert rows_of(mask) == ref
    if boxes_from_masks:
        for box, mask in zip(out.pred_boxes.tensor, out.pred_masks):
            ys, xs = torch.where(mask)
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    else:
        assert out.pred_boxes.tensor.tolist() == expected["pred_boxes"]
