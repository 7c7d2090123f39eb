"""``CFTHead`` (``cft/modeling/cft_head.py``) and its losses (``cft/modeling/losses.py``).

* Built from the R50 and MiT-B2 ADE20K configs, the head has exactly the reference parameter counts
  (7,775,382 / 7,054,486) and per-module breakdown, and its state dict equals the reference manifest
  (names, shapes, parameter/buffer split) minus the unused loss buffer; the other configs give the
  counts of cft.md 2.10.
* Shapes (cft.md 9.2): stage masks coarsest first and stride-4 logits, for 512x512 and 512x683.
* Losses (cft.md 9.4, 9.5): the mask loss only supervises present classes with ignored pixels as
  negatives and N = number of pairs, against fvcore/segcommon formulas written out; CE divides by
  all pixels (or by valid pixels with CE_AVG_NON_IGNORE); the loss dict of a training forward.
"""
import json

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec

from cft.modeling.cft_head import CFTHead
from cft.modeling.losses import category_mask_losses, pixel_cross_entropy
from conftest import REPO, shared_path
from segcommon.engine.defaults import setup_cfg

MANIFESTS = ["cft_r50-d32_512x512_ade20k", "cft_mit-b2_512x512_ade20k"]
DROPPED = "loss_decode.1.criterion.empty_weight"


def build_on_meta(config: str, *opts):
    """The model of ``configs/cft/<config>.yaml`` on the meta device (shapes only)."""
    from detectron2.modeling import META_ARCH_REGISTRY

    cfg = setup_cfg(str(REPO / "configs" / "cft" / f"{config}.yaml"), ["MODEL.DEVICE", "cpu", *opts], check_datasets=False)
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


@pytest.mark.parametrize("name", MANIFESTS)
def test_head_matches_reference_manifest(name):
    manifest = json.loads(shared_path("reference", "cft", f"{name}.json").read_text())
    head = build_on_meta(name).sem_seg_head
    assert sum(p.numel() for p in head.parameters()) == manifest["num_params_head"]
    for module, count in manifest["num_params_breakdown"].items():
        assert sum(p.numel() for p in head.get_submodule(module).parameters()) == count, module
    ours = {k: list(v.shape) for k, v in head.state_dict().items()}
    theirs = {k: v for k, v in manifest["state_dict"].items() if k != DROPPED}
    assert ours == theirs
    params = {k for k, _ in head.named_parameters()}
    assert params == {k for k, is_param in manifest["is_parameter"].items() if is_param}
    buffers = sum(b.numel() for b in head.buffers())
    assert buffers + manifest["state_dict"][DROPPED][0] == manifest["num_buffer_elements_head"]


@pytest.mark.parametrize(
    "config, count",
    [
        ("cft_r101-d32_512x512_ade20k", 7_775_382),
        ("cft_mit-b5_640x640_ade20k", 7_054_486),
        ("cft_swin-large-4-12_640x640_ade20k", 7_529_622),
        ("cft_r101-d32_768x768_citys", 7_641_107),
        ("cft_r101-d32_480x480_pascal-context-59", 7_682_107),
        ("cft_swin-large-4-12_1024x1024_citys", 7_395_347),
        ("cft_swin-large-4-12_480x480_pascal-context-59", 7_436_347),
        ("cft_swin-large-4-12_480x480_pascal-context", 7_437_372),
    ],
)
def test_head_parameter_counts_of_other_configs(config, count):
    assert sum(p.numel() for p in build_on_meta(config).sem_seg_head.parameters()) == count


def _small_head(num_classes=150, conv_dim=64, **kwargs) -> CFTHead:
    shapes = {f"res{i + 2}": ShapeSpec(channels=c, stride=4 * 2**i) for i, c in enumerate((16, 24, 32, 40))}
    return CFTHead(shapes, num_classes=num_classes, conv_dim=conv_dim, norm="BN", **kwargs)


@pytest.mark.parametrize(
    "size, mask_sizes, logit_size",
    [
        ((512, 512), [(16, 16), (32, 32), (64, 64)], (128, 128)),
        ((512, 683), [(16, 22), (32, 43), (64, 86)], (128, 171)),
    ],
)
def test_shapes(size, mask_sizes, logit_size):
    torch.manual_seed(0)
    head = _small_head().eval()
    h, w = size
    feats = {
        f"res{i + 2}": torch.randn(1, c, -(-h // (4 * 2**i)), -(-w // (4 * 2**i)))
        for i, c in enumerate((16, 24, 32, 40))
    }
    with torch.no_grad():
        logits, masks = head.layers(feats)
    assert [tuple(m.shape) for m in masks] == [(1, 150) + s for s in mask_sizes]
    assert tuple(logits.shape) == (1, 150) + logit_size


def _focal_ref(x, t, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return (ce * (1 - p_t) ** gamma * a_t).mean()


def _dice_ref(x, t):
    p = torch.sigmoid(x)
    return 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)


def test_mask_loss_only_present_classes_ignore_as_negative():
    torch.manual_seed(0)
    labels = torch.full((1, 4, 5), 3, dtype=torch.long)
    labels[0, 2:, :] = 7
    labels[0, 0, 0] = 255  # one ignored pixel
    logits = torch.randn(1, 10, 4, 5, requires_grad=True)
    focal, dice = category_mask_losses(logits, labels)
    t3 = (labels[0] == 3).float()  # the ignored pixel is 0 (negative) in both targets
    t7 = (labels[0] == 7).float()
    assert t3[0, 0] == 0 and t7[0, 0] == 0
    n = 2
    torch.testing.assert_close(focal, (_focal_ref(logits[0, 3], t3) + _focal_ref(logits[0, 7], t7)) / n)
    torch.testing.assert_close(dice, (_dice_ref(logits[0, 3], t3) + _dice_ref(logits[0, 7], t7)) / n)
    (focal + dice).backward()
    touched = logits.grad[0].abs().flatten(1).sum(1) > 0
    assert touched.nonzero().flatten().tolist() == [3, 7]


def test_mask_loss_normaliser_counts_pairs_over_batch_and_skips_empty_images():
    torch.manual_seed(0)
    labels = torch.stack([torch.tensor([[0, 1], [1, 2]]), torch.full((2, 2), 255)])  # 3 + 0 classes
    logits = torch.randn(2, 4, 2, 2)
    focal, dice = category_mask_losses(logits, labels)
    pairs = [(0, c) for c in (0, 1, 2)]
    exp_f = sum(_focal_ref(logits[b, c], (labels[b] == c).float()) for b, c in pairs) / 3
    exp_d = sum(_dice_ref(logits[b, c], (labels[b] == c).float()) for b, c in pairs) / 3
    torch.testing.assert_close(focal, exp_f)
    torch.testing.assert_close(dice, exp_d)
    empty_f, empty_d = category_mask_losses(logits[1:], labels[1:])
    assert empty_f.item() == 0 and empty_d.item() == 0


def test_cross_entropy_divides_by_all_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 4)
    labels = torch.randint(0, 5, (2, 3, 4))
    labels[0, 0, :] = 255
    labels[1, 2, 1] = 255
    valid = labels != 255
    per_pixel = F.cross_entropy(logits, labels.clamp(max=4), reduction="none")
    total = per_pixel[valid].sum()
    torch.testing.assert_close(pixel_cross_entropy(logits, labels), total / labels.numel())
    torch.testing.assert_close(pixel_cross_entropy(logits, labels, avg_non_ignore=True), total / valid.sum())


def test_training_forward_returns_weighted_losses():
    torch.manual_seed(0)
    head = _small_head(num_classes=6, conv_dim=32, mask_focal_weight=5.0, mask_dice_weight=2.0).train()
    feats = {f"res{i + 2}": torch.randn(2, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate((16, 24, 32, 40))}
    labels = torch.randint(0, 6, (2, 64, 64))
    labels[:, :8] = 255
    _, losses = head(feats, labels)
    assert set(losses) == {"loss_sem_seg", "loss_mask_focal", "loss_mask_dice"}
    total = sum(losses.values())
    total.backward()
    assert all(p.grad is not None for p in head.parameters())
    # The weighting, on the deterministic (eval) maps.
    head.eval()
    logits, masks = head.layers(feats)
    up = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    msum = sum(F.interpolate(m, size=(64, 64), mode="bilinear", align_corners=False) for m in masks)
    focal, dice = category_mask_losses(msum, labels)
    eval_losses = head.losses(logits, masks, labels)
    torch.testing.assert_close(eval_losses["loss_sem_seg"], pixel_cross_entropy(up, labels))
    torch.testing.assert_close(eval_losses["loss_mask_focal"], 5.0 * focal)
    torch.testing.assert_close(eval_losses["loss_mask_dice"], 2.0 * dice)
