"""SemanticSegmentorWithTTA averages the sem_seg of resized and flipped copies, flipped back."""
import torch
from torch import nn
from torch.nn import functional as F

from segcommon.engine import get_project_cfg
from segcommon.modeling import SemanticSegmentorWithTTA


class _ResizeBack(nn.Module):
    """Returns the image's first channel resized to the requested (height, width) as 'sem_seg'."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, batched_inputs):
        out = []
        for x in batched_inputs:
            self.calls.append(tuple(x["image"].shape[-2:]))
            img = x["image"][:1].float()[None]
            out.append({"sem_seg": F.interpolate(img, size=(x["height"], x["width"]), mode="bilinear",
                                                 align_corners=False)[0]})
        return out


def _cfg(min_sizes, flip):
    cfg = get_project_cfg()
    cfg.TEST.AUG.MIN_SIZES = min_sizes
    cfg.TEST.AUG.MAX_SIZE = 1000
    cfg.TEST.AUG.FLIP = flip
    return cfg


def _ramp(h, w):
    return torch.arange(w, dtype=torch.uint8).repeat(3, h, 1)  # (3, H, W): value = x


def test_flip_is_undone_before_averaging():
    model = _ResizeBack()
    tta = SemanticSegmentorWithTTA(_cfg((8,), True), model)
    image = _ramp(8, 12)
    out = tta([{"image": image, "height": 8, "width": 12}])[0]["sem_seg"]
    assert model.calls == [(8, 12), (8, 12)]  # original and flipped copy
    torch.testing.assert_close(out, image[:1].float())


def test_multi_scale_average_of_each_copy():
    model = _ResizeBack()
    cfg = _cfg((8, 16), False)
    tta = SemanticSegmentorWithTTA(cfg, model)
    image = _ramp(8, 12)
    out = tta([{"image": image, "height": 8, "width": 12}])[0]["sem_seg"]
    assert model.calls == [(8, 12), (16, 24)]
    assert out.shape == (1, 8, 12)
    # each copy resized back approximates the ramp; the average stays within interpolation error
    assert (out - image[:1].float()).abs().max() < 1.0
