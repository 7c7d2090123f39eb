"""mask_agreement: pixel agreement of final masks; instance sets are matched one to one first."""
import pytest
import torch
from detectron2.structures import Instances

from segcommon.deploy import mask_agreement


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
