"""The Transfiner mask head and ROI heads in a full model:

* the coarse 28x28 logits equal a stock Detectron2 Mask R-CNN's (``MaskRCNNConvUpsampleHead`` +
  stock ``ROIPooler``) loaded with the same weights (the 14x14 features come from the unmodified FPN);
* the mask pooler's fine pyramid (cap, shapes) and the training refinement sequence (646 tokens);
* training losses are finite and decrease over 15 steps on a fixed tiny batch (toy config);
* the no-valid-RoI fallback and a batch without any foreground do not crash;
* inference returns Instances with boolean ``pred_masks`` at the requested output size, refines only
  the top detections, and handles zero detections.
"""
import copy

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from conftest import REPO
from segcommon.engine import setup_cfg
from transfiner.modeling import NodeEncoder, TransfinerMaskHead, TransfinerMaskPooler

TOY = str(REPO / "configs" / "transfiner" / "toy" / "transfiner_R18_FPN_toy.yaml")
R50 = str(REPO / "configs" / "transfiner" / "transfiner" / "mask_rcnn_R_50_FPN_3x.yaml")
# Keeps the CPU training tests quick: fewer sampled proposals, refined RoIs and nodes per level.
SMALL = ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, "MODEL.TRANSFINER.MAX_REFINE_ROIS_TRAIN", 6,
         "MODEL.TRANSFINER.NODES_PER_LEVEL_TRAIN", 40)
LOSS_KEYS = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "loss_mask", "loss_mask_uncertain",
             "loss_mask_refine", "loss_semantic", "loss_bound"}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a small shared CPU, two threads of these tiny ops mostly contend
    (about 15x slower here); results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cfg_of(path, *opts):
    return setup_cfg(path, ["MODEL.DEVICE", "cpu", *map(str, opts)], check_datasets=False)


def polygon(x0, y0, x1, y1):
    # a pentagon inside the box, so masks are not plain rectangles
    xm = (x0 + x1) / 2
    return [np.array([x0, y0 + 5, xm, y0, x1, y0 + 5, x1 - 4, y1, x0 + 4, y1], dtype=np.float64)]


def batch(with_gt=True):
    """Two fixed 128x160 images with two objects each (deterministic pixels)."""
    g = torch.Generator().manual_seed(0)
    inputs = []
    for objs in ([(10, 12, 70, 80, 0), (80, 30, 150, 110, 1)], [(20, 20, 120, 100, 2), (5, 90, 45, 125, 0)]):
        img = torch.randint(0, 60, (3, 128, 160), generator=g, dtype=torch.uint8)
        inst = Instances((128, 160))
        polys = []
        for x0, y0, x1, y1, c in objs if with_gt else []:
            img[c, y0:y1, x0:x1] = 220
            polys.append(polygon(x0, y0, x1, y1))
        inst.gt_boxes = Boxes(torch.tensor([o[:4] for o in objs], dtype=torch.float32) if with_gt else torch.zeros(0, 4))
        inst.gt_classes = torch.tensor([o[4] for o in objs] if with_gt else [], dtype=torch.int64)
        inst.gt_masks = PolygonMasks(polys)
        inputs.append({"image": img, "instances": inst, "height": 128, "width": 160})
    return inputs


# ----------------------------------------------------------------------------------------------------
# Coarse branch == stock Mask R-CNN


def test_transfiner_coarse_logits_equal_stock_mask_rcnn():
    torch.manual_seed(0)
    cfg = cfg_of(R50, "MODEL.ROI_HEADS.NUM_CLASSES", 5)
    ours = build_model(cfg).eval()
    stock_cfg = cfg.clone()
    stock_cfg.defrost()
    stock_cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    stock_cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    stock = build_model(stock_cfg).eval()
    incompatible = stock.load_state_dict(ours.state_dict(), strict=False)
    assert not incompatible.missing_keys  # the stock model is a subset of the Transfiner model
    assert all(".mask_pooler.conv_norm_relus_semantic." in k or k.startswith("roi_heads.mask_head.")
               for k in incompatible.unexpected_keys)
    # Large enough coarse weights that the comparison is meaningful.
    with torch.no_grad():
        for m in (ours, stock):
            m.roi_heads.mask_head.predictor.weight.copy_(ours.roi_heads.mask_head.predictor.weight * 0 + 0.02)

    images = ours.preprocess_image([{"image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)}])
    boxes = [Boxes(torch.tensor([[4.0, 6, 60, 70], [30, 10, 120, 90], [0, 0, 127, 95], [50, 40, 58, 50]]))]
    with torch.no_grad():
        feats = ours.backbone(images.tensor)
        x = [feats[f] for f in ours.roi_heads.mask_in_features]
        pooled = ours.roi_heads.mask_pooler(list(x), boxes)
        _, coarse = ours.roi_heads.mask_head.coarse_layers(pooled[0])
        stock_x14 = stock.roi_heads.mask_pooler(list(x), boxes)
        stock_coarse = stock.roi_heads.mask_head.layers(stock_x14)
    assert coarse.shape == (4, 5, 28, 28)
    assert torch.equal(pooled[0], stock_x14)
    assert torch.equal(coarse, stock_coarse)
    assert coarse.abs().max() > 1e-3


def test_transfiner_pooler_pyramid_cap_and_shapes():
    torch.manual_seed(0)
    pooler = TransfinerMaskPooler(14, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2", in_channels=8,
                                  max_rois_train=3, max_rois_test=2, semantic_conv_dim=8)
    assert [type(m).__name__ for m in pooler.conv_norm_relus_semantic] == ["Conv2d", "ReLU"] * 3 + ["Conv2d"]
    x = [torch.randn(2, 8, 64 // 2 ** k, 64 // 2 ** k) for k in range(4)]
    p2 = x[0].clone()
    boxes = [Boxes(torch.tensor([[0.0, 0, 60, 60], [5, 5, 20, 20]])), Boxes(torch.tensor([[1.0, 2, 250, 250]]))]
    for training, n in ((True, 3), (False, 2)):
        pooler.train(training)
        x14, x28, x56, x112, s = pooler(x, boxes)
        assert x14.shape == (3, 8, 14, 14) and s.shape == (2, 8, 64, 64)
        assert (x28.shape, x56.shape, x112.shape) == ((n, 8, 28, 28), (n, 8, 56, 56), (n, 8, 112, 112))
    assert torch.equal(x[0], p2)  # the caller's p2 is untouched


# ----------------------------------------------------------------------------------------------------
# Training


def train_steps(model, inputs, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    with EventStorage(0) as storage:
        for _ in range(steps):
            losses = model(copy.deepcopy(inputs))
            total = sum(losses.values())
            opt.zero_grad()
            total.backward()
            opt.step()
            storage.step()
            history.append({k: v.item() for k, v in losses.items()})
    return history


def test_transfiner_training_losses_finite_and_decreasing():
    torch.manual_seed(0)
    model = build_model(cfg_of(TOY, *SMALL)).train()
    calls = []
    model.roi_heads.mask_head.encoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    history = train_steps(model, batch(), 15)
    assert set(history[0]) == LOSS_KEYS
    assert all(np.isfinite(v) for h in history for v in h.values())
    total = [sum(h.values()) for h in history]
    assert np.mean(total[-3:]) < np.mean(total[:3]), total
    for key in ("loss_mask", "loss_mask_refine", "loss_semantic"):
        assert np.mean([h[key] for h in history[-3:]]) < np.mean([h[key] for h in history[:3]]), key
    # Valid RoIs are refined with 196 context + 3 x 40 sampled nodes, at most 6 RoIs.
    assert any(c[1] == 196 + 3 * 40 for c in calls)
    assert all(c[0] <= 6 for c in calls)


def test_transfiner_gradients_reach_the_transfiner_modules():
    torch.manual_seed(0)
    model = build_model(cfg_of(TOY, *SMALL)).train()
    with EventStorage(0):
        sum(model(batch()).values()).backward()
    head = model.roi_heads.mask_head
    for name, module in (("semantic convs", model.roi_heads.mask_pooler.conv_norm_relus_semantic),
                         ("mask_fcn1", head.mask_fcn1), ("mask_fcn_uncertain1", head.mask_fcn_uncertain1),
                         ("deconv_bo", head.deconv_bo), ("predictor_semantic_s", head.predictor_semantic_s),
                         ("encoder", head.encoder)):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name


def test_transfiner_no_valid_roi_fallback():
    torch.manual_seed(0)
    model = build_model(cfg_of(TOY, *SMALL, "MODEL.TRANSFINER.MIN_NODES_PER_LEVEL_TRAIN", 100000)).train()
    calls = []
    model.roi_heads.mask_head.encoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    with EventStorage(0):
        losses = model(batch())
        sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert calls and calls[0][1] == 196  # context tokens only, for all refined RoIs


def test_transfiner_batch_without_foreground():
    torch.manual_seed(0)
    model = build_model(cfg_of(TOY, *SMALL)).train()
    with EventStorage(0):
        losses = model(batch(with_gt=False))
        sum(losses.values()).backward()
    assert set(losses) == LOSS_KEYS
    for k in ("loss_mask", "loss_mask_uncertain", "loss_mask_refine", "loss_semantic", "loss_bound"):
        assert float(losses[k]) == 0.0


def test_transfiner_one_image_without_foreground():
    torch.manual_seed(0)
    model = build_model(cfg_of(TOY, *SMALL)).train()
    inputs = batch()
    inputs[1] = batch(with_gt=False)[1]
    with EventStorage(0):
        losses = model(inputs)
    assert all(torch.isfinite(v) for v in losses.values())


# ----------------------------------------------------------------------------------------------------
# Inference


def test_transfiner_inference_masks_at_image_size_and_only_top_refined():
    torch.manual_seed(0)
    model = build_model(cfg_of(TOY, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                               "MODEL.TRANSFINER.MAX_REFINE_ROIS_TEST", 3)).eval()
    calls = []
    model.roi_heads.mask_head.encoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    inputs = [{"image": b["image"], "height": 200, "width": 250} for b in batch()]
    with torch.no_grad():
        outputs = model(inputs)
    num = [len(o["instances"]) for o in outputs]
    assert sum(num) > 3
    for o, n in zip(outputs, num):
        inst = o["instances"]
        assert inst.image_size == (200, 250)
        assert inst.pred_masks.shape == (n, 200, 250) and inst.pred_masks.dtype == torch.bool
        assert {"pred_boxes", "scores", "pred_classes"} <= set(inst.get_fields())
    # The first 3 (the cap) detections of the concatenated batch, one variable-length sequence each.
    assert len(calls) == 3 and all(c[0] == 1 and c[1] > 196 for c in calls)


def test_transfiner_inference_refines_on_top_of_coarse():
    """Refined RoIs differ from the plain coarse upsampling; the others are exactly that upsampling."""
    torch.manual_seed(0)
    cfg = cfg_of(TOY)
    head = TransfinerMaskHead(cfg, TransfinerMaskHead.from_config(cfg, _shape(cfg))["input_shape"]).eval()
    n_all, n = 5, 2
    x14 = torch.randn(n_all, 64, 14, 14)
    fine = [torch.randn(n, 64, s, s) for s in (28, 56, 112)]
    inst = Instances((64, 64))
    inst.pred_classes = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        head((x14, *fine, torch.randn(1, 64, 16, 16)), [inst])
        _, coarse = head.coarse_layers(x14)
    probs = coarse[torch.arange(n_all), inst.pred_classes][:, None].sigmoid()
    plain = torch.nn.functional.interpolate(probs, (112, 112), mode="bilinear", align_corners=False)
    assert inst.pred_masks.shape == (n_all, 1, 112, 112)
    assert torch.equal(inst.pred_masks[n:], plain[n:])
    assert not torch.allclose(inst.pred_masks[:n], plain[:n])


def _shape(cfg):
    from detectron2.layers import ShapeSpec

    return ShapeSpec(channels=cfg.MODEL.FPN.OUT_CHANNELS, height=14, width=14)


def test_transfiner_inference_with_zero_detections():
    torch.manual_seed(0)
    model = build_model(cfg_of(TOY, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 1.1)).eval()
    with torch.no_grad():
        out = model([{"image": batch()[0]["image"], "height": 64, "width": 80}])[0]["instances"]
    assert len(out) == 0 and out.pred_masks.shape == (0, 64, 80)


def test_transfiner_demo_smoothing_changes_only_refined_output():
    torch.manual_seed(0)
    cfg = cfg_of(TOY, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.TRANSFINER.MAX_REFINE_ROIS_TEST", 2)
    model = build_model(cfg).eval()
    inputs = [{"image": batch()[0]["image"]}]
    with torch.no_grad():
        plain = model(inputs)[0]["instances"]
        model.roi_heads.mask_head.demo_smoothing = True
        smooth = model(inputs)[0]["instances"]
    assert len(plain) == len(smooth) > 2
    assert torch.equal(plain.pred_masks[2:], smooth.pred_masks[2:])


def test_transfiner_encoder_initialisation():
    enc = NodeEncoder(in_channels=16, d_model=16, nhead=4, num_layers=3, dim_feedforward=32, decoder_hidden_dim=16)
    assert enc.conv_fuse.weight.shape == (16, 17, 1, 1)
    # Biases keep their defaults: identical across the deep-copied layers.
    assert torch.equal(enc.layers[0].linear1.bias, enc.layers[1].linear1.bias)
    assert not torch.equal(enc.layers[0].linear1.weight, enc.layers[1].linear1.weight)  # Xavier re-init
    out = enc(torch.randn(2, 30, 17), torch.randn(2, 30, 16))
    assert out.shape == (2, 30) and ((out > 0) & (out < 1)).all()
