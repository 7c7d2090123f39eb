"""``MaskFormer.forward`` inference against the full-upsampling formulation of the reference
(``shared/specs/mask2former.md`` §2.4, §2.7): upsample all queries' mask logits to the padded batch
size, ``sem_seg_postprocess`` them, then select the top-k (query, class) pairs. The instance-only
path selects first and upsamples only the selected queries' masks; its output must not change.

The backbone and head are stubs returning fixed random outputs, so only the inference code runs.
"""
import pytest
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks
from torch import nn
from torch.nn import functional as F

from mask2former.maskformer_model import MaskFormer

SIZE_DIVISIBILITY = 32


class _Backbone(nn.Module):
    size_divisibility = SIZE_DIVISIBILITY

    def forward(self, x):
        return {}


class _Head(nn.Module):
    def __init__(self, pred_logits, pred_masks):
        super().__init__()
        self.pred_logits, self.pred_masks = pred_logits, pred_masks

    def forward(self, features):
        return {"pred_logits": self.pred_logits, "pred_masks": self.pred_masks}


def _model(pred_logits, pred_masks, topk, thing_ids=(), semantic=False, panoptic=False, instance=True):
    return MaskFormer(
        backbone=_Backbone(), sem_seg_head=_Head(pred_logits, pred_masks), criterion=nn.Identity(),
        num_queries=pred_logits.shape[1], object_mask_threshold=0.3, overlap_threshold=0.5,
        thing_ids=list(thing_ids), size_divisibility=SIZE_DIVISIBILITY,
        sem_seg_postprocess_before_inference=True, pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0],
        semantic_on=semantic, panoptic_on=panoptic, instance_on=instance, test_topk_per_image=topk,
    ).eval()


def _reference_instances(mask_cls, mask_pred, topk, thing_ids=None):
    """The previous formulation: ``mask_pred`` (Q, H, W) is already at output resolution for all Q
    queries; select the top-k pairs, then binarise, score and box the selected masks."""
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[-1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes).repeat(num_queries)
    scores_per_image, topk_indices = scores.flatten().topk(min(topk, scores.numel()), sorted=False)
    labels_per_image = labels[topk_indices]
    mask_pred = mask_pred[topk_indices // num_classes]
    if thing_ids is not None:
        keep = torch.isin(labels_per_image, torch.tensor(list(thing_ids), dtype=labels_per_image.dtype))
        scores_per_image, labels_per_image, mask_pred = scores_per_image[keep], labels_per_image[keep], mask_pred[keep]
    masks = (mask_pred > 0).float()
    mask_scores = (mask_pred.sigmoid().flatten(1) * masks.flatten(1)).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    return {
        "image_size": tuple(masks.shape[-2:]),
        "scores": scores_per_image * mask_scores,
        "pred_classes": labels_per_image,
        "pred_masks": masks,
        "pred_boxes": BitMasks(masks > 0).get_bounding_boxes().tensor,
    }


def _reference_full_masks(batched_inputs, pred_masks):
    """Per image, all queries' mask logits upsampled to the padded size, cropped and resized (§2.4)."""
    padded = [max(x["image"].shape[d] for x in batched_inputs) for d in (1, 2)]
    padded = [(s + SIZE_DIVISIBILITY - 1) // SIZE_DIVISIBILITY * SIZE_DIVISIBILITY for s in padded]
    up = F.interpolate(pred_masks, size=padded, mode="bilinear", align_corners=False)
    out = []
    for masks, x in zip(up, batched_inputs):
        h, w = x["image"].shape[-2:]
        out.append(sem_seg_postprocess(masks, (h, w), x.get("height", h), x.get("width", w)))
    return out


def _assert_instances_equal(inst, ref):
    assert inst.image_size == ref["image_size"]
    assert torch.equal(inst.pred_classes, ref["pred_classes"]) and inst.pred_classes.dtype == torch.int64
    assert inst.pred_masks.dtype == torch.float32
    assert torch.equal(inst.pred_masks, ref["pred_masks"])
    assert torch.equal(inst.pred_boxes.tensor, ref["pred_boxes"])
    torch.testing.assert_close(inst.scores, ref["scores"], rtol=0, atol=1e-6)


def _case(num_queries=12, num_classes=5, seed=0):
    """Two images of different sizes (padded to 64 x 96, masks at 16 x 24); the first is resized to
    another output size, the second keeps its image size."""
    g = torch.Generator().manual_seed(seed)
    batched_inputs = [
        {"image": torch.rand(3, 60, 90, generator=g), "height": 95, "width": 130},
        {"image": torch.rand(3, 64, 70, generator=g)},
    ]
    pred_logits = torch.randn(2, num_queries, num_classes + 1, generator=g) * 3
    pred_masks = torch.randn(2, num_queries, 16, 24, generator=g) * 4
    return batched_inputs, pred_logits, pred_masks


@pytest.mark.parametrize("topk", [1, 7, 30])  # 30 > 12 queries: queries are selected several times
def test_instance_only_inference_matches_full_upsampling(topk):
    batched_inputs, pred_logits, pred_masks = _case()
    with torch.no_grad():
        results = _model(pred_logits, pred_masks, topk)(batched_inputs)
    full = _reference_full_masks(batched_inputs, pred_masks)
    for result, mask_cls, mask_pred in zip(results, pred_logits, full):
        assert set(result) == {"instances"}
        assert len(result["instances"]) == topk
        _assert_instances_equal(result["instances"], _reference_instances(mask_cls, mask_pred, topk))


def _count_resized_channels(monkeypatch):
    """Records the channel count of every ``F.interpolate`` call."""
    channels = []
    interpolate = F.interpolate

    def counting_interpolate(x, *args, **kwargs):
        channels.append(x.shape[-3])
        return interpolate(x, *args, **kwargs)

    monkeypatch.setattr(F, "interpolate", counting_interpolate)
    return channels


def test_instance_only_inference_upsamples_only_selected_queries(monkeypatch):
    batched_inputs, pred_logits, pred_masks = _case(num_queries=12)
    topk = 4
    channels = _count_resized_channels(monkeypatch)
    with torch.no_grad():
        _model(pred_logits, pred_masks, topk)(batched_inputs)
    # The first image: to the padded size, then to its output size (sem_seg_postprocess). The
    # second keeps its image size, where that second resize is the identity and is skipped.
    assert channels == [topk] * 3


def test_instance_only_inference_works_in_chunks_of_selected_masks(monkeypatch):
    """More selected pairs than one chunk: the masks are resized a few at a time (the result is
    checked against the full formulation by the test above, with 30 pairs)."""
    batched_inputs, pred_logits, pred_masks = _case(num_queries=12)
    channels = _count_resized_channels(monkeypatch)
    with torch.no_grad():
        results = _model(pred_logits, pred_masks, 20)(batched_inputs)
    assert [len(r["instances"]) for r in results] == [20, 20]
    assert channels == [8, 8, 8, 8, 4, 4] + [8, 8, 4]


def test_instance_only_inference_with_topk_zero():
    batched_inputs, pred_logits, pred_masks = _case()
    with torch.no_grad():
        results = _model(pred_logits, pred_masks, 0)(batched_inputs)
    assert [r["instances"].image_size for r in results] == [(95, 130), (64, 70)]
    assert [len(r["instances"]) for r in results] == [0, 0]
    assert results[0]["instances"].pred_masks.shape == (0, 95, 130)


def test_semantic_and_instance_inference_see_all_queries():
    batched_inputs, pred_logits, pred_masks = _case(seed=1)
    topk = 9
    with torch.no_grad():
        results = _model(pred_logits, pred_masks, topk, semantic=True)(batched_inputs)
    full = _reference_full_masks(batched_inputs, pred_masks)
    for result, mask_cls, mask_pred in zip(results, pred_logits, full):
        assert set(result) == {"sem_seg", "instances"}
        sem = torch.einsum("qc,qhw->chw", F.softmax(mask_cls, dim=-1)[:, :-1], mask_pred.sigmoid())
        torch.testing.assert_close(result["sem_seg"], sem, rtol=0, atol=1e-6)
        _assert_instances_equal(result["instances"], _reference_instances(mask_cls, mask_pred, topk))


def test_panoptic_and_instance_inference_keep_thing_pairs():
    batched_inputs, pred_logits, pred_masks = _case(seed=2)
    topk, thing_ids = 20, [0, 2]
    with torch.no_grad():
        results = _model(pred_logits, pred_masks, topk, thing_ids=thing_ids, panoptic=True)(batched_inputs)
    full = _reference_full_masks(batched_inputs, pred_masks)
    for result, mask_cls, mask_pred in zip(results, pred_logits, full):
        assert set(result) == {"panoptic_seg", "instances"}
        assert set(result["instances"].pred_classes.tolist()) <= set(thing_ids)
        _assert_instances_equal(result["instances"], _reference_instances(mask_cls, mask_pred, topk, thing_ids))
