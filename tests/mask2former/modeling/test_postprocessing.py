"""Semantic, panoptic and instance inference against the reference's golden outputs."""
import json

import pytest
import torch

from mask2former.modeling.postprocessing import instance_inference, panoptic_inference, semantic_inference
from conftest import shared_path


@pytest.fixture(scope="module")
def golden():
    with open(shared_path("reference", "mask2former", "golden_small.json")) as f:
        case = json.load(f)["postprocess"]
    case["mask_cls_t"] = torch.tensor(case["mask_cls"])
    case["mask_pred_t"] = torch.tensor(case["mask_pred"])
    return case


def test_semantic_inference(golden):
    sem = semantic_inference(golden["mask_cls_t"], golden["mask_pred_t"])
    assert sem.shape[0] == golden["num_classes"]
    torch.testing.assert_close(sem, torch.tensor(golden["semantic"]), rtol=1e-5, atol=1e-6)


def test_panoptic_inference(golden):
    pan, segments = panoptic_inference(
        golden["mask_cls_t"], golden["mask_pred_t"], golden["thing_contiguous_ids"],
        golden["object_mask_threshold"], golden["overlap_threshold"],
    )
    assert pan.dtype == torch.int32
    assert pan.tolist() == golden["panoptic_seg"]
    assert segments == golden["segments_info"]


def _sorted(inst):
    order = inst.scores.argsort(descending=True)
    return inst.scores[order], inst.pred_classes[order], inst.pred_masks[order]


def test_instance_inference(golden):
    inst = instance_inference(golden["mask_cls_t"], golden["mask_pred_t"], golden["topk"])
    scores, classes, masks = _sorted(inst)
    ref = golden["instances_sorted_by_score"]
    torch.testing.assert_close(scores, torch.tensor(ref["scores"]), rtol=1e-5, atol=1e-6)
    assert classes.tolist() == ref["pred_classes"]
    assert masks.flatten(1).sum(1).tolist() == ref["pred_masks_sum"]
    assert inst.pred_classes.dtype == torch.int64


def test_instance_inference_panoptic_keeps_things_only(golden):
    inst = instance_inference(golden["mask_cls_t"], golden["mask_pred_t"], golden["topk"],
                              golden["thing_contiguous_ids"])
    scores, classes, _ = _sorted(inst)
    ref = golden["instances_panoptic_on_sorted_by_score"]
    torch.testing.assert_close(scores, torch.tensor(ref["scores"]), rtol=1e-5, atol=1e-6)
    assert classes.tolist() == ref["pred_classes"]


def test_instance_boxes_enclose_masks():
    mask_cls = torch.tensor([[5.0, 0.0, 0.0]])
    mask_pred = torch.full((1, 6, 8), -5.0)
    mask_pred[0, 1:4, 2:7] = 5.0
    inst = instance_inference(mask_cls, mask_pred, topk=1)
    assert inst.pred_boxes.tensor.tolist() == [[2.0, 1.0, 7.0, 4.0]]  # XYXY, +1 on the max side


def test_panoptic_with_no_confident_query():
    pan, segments = panoptic_inference(torch.tensor([[0.0, 9.0]]), torch.zeros(1, 4, 4), [0], 0.8, 0.8)
    assert segments == [] and pan.abs().sum() == 0
