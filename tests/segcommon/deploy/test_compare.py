"""mask_agreement: pixel agreement of final masks; instance sets are matched one to one first.
match_detections: detections of two runs paired by class and nearest box."""
import numpy as np
import pytest
import torch
from detectron2.structures import Instances

from segcommon.deploy import mask_agreement, match_detections


def _instances(masks):
    inst = Instances(masks.shape[1:])
    inst.pred_masks = masks
    return {"instances": inst}


def _masks():
    m = torch.zeros(3, 10, 10, dtype=torch.bool)
    m[0, :5], m[1, 5:, :5], m[2, 5:, 5:] = True, True, True
    return m


def test_instances_in_another_order_agree_fully():
    m = _masks()
    assert mask_agreement(_instances(m), _instances(m[[2, 0, 1]])) == 1.0


def test_differing_pixels_and_a_missing_instance_are_counted():
    m = _masks()
    changed = m.clone()
    changed[0, 0, :4] = False  # 4 pixels of 300
    assert mask_agreement(_instances(m), _instances(changed)) == pytest.approx(1 - 4 / 300)
    # One instance missing: its 25 pixels disagree with the empty mask it is matched to.
    assert mask_agreement(_instances(m), _instances(m[:2])) == pytest.approx(1 - 25 / 300)


def test_semantic_and_panoptic_maps():
    logits = torch.randn(4, 6, 7)
    other = logits.clone()
    other[:, 0, 0] = torch.tensor([9.0, 0, 0, 0]) if logits[:, 0, 0].argmax() != 0 else torch.tensor([0, 9.0, 0, 0])
    assert mask_agreement({"sem_seg": logits}, {"sem_seg": other}) == pytest.approx(1 - 1 / 42)
    ids = torch.randint(0, 3, (6, 7))
    assert mask_agreement({"panoptic_seg": (ids, [])}, {"panoptic_seg": (ids.clone(), [])}) == 1.0
    with pytest.raises(ValueError, match="different sizes"):
        mask_agreement({"sem_seg": logits}, {"sem_seg": logits[:, :3]})


def test_match_detections_undoes_a_reordering():
    rng = np.random.RandomState(0)
    boxes = rng.uniform(0, 100, (6, 4)).astype(np.float32)
    boxes[3] = boxes[1] + 0.5  # a near-duplicate of another class must not be taken for box 1
    classes = np.array([0, 1, 2, 2, 0, 1])
    perm = np.array([4, 2, 0, 5, 1, 3])
    other_boxes, other_classes = boxes[perm] + 1e-4, classes[perm]
    ia, ib = match_detections(other_boxes, other_classes, boxes, classes)
    assert ib.tolist() == list(range(6))
    assert np.array_equal(other_classes[ia], classes)
    assert np.abs(other_boxes[ia] - boxes).max() < 1e-3


def test_match_detections_with_different_counts_and_none():
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32)
    ia, ib = match_detections(boxes[1:], np.array([1]), boxes, np.array([0, 1]))
    assert ia.tolist() == [0] and ib.tolist() == [1]
    ia, ib = match_detections(np.zeros((0, 4)), np.zeros(0), boxes, np.array([0, 1]))
    assert len(ia) == len(ib) == 0
