"""The SOTR meta-architecture end to end on a tiny config (R18-GN, 64 px images): training losses,
the no-positive batch, inference outputs and the feature shapes."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances

from conftest import REPO
from segcommon.engine import setup_cfg

TOY = REPO / "configs" / "sotr" / "toy" / "SOTR_R18_toy.yaml"
TINY = [
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.SOTR.INSTANCE_IN_CHANNELS", "32",
    "MODEL.SOTR.MASK_IN_CHANNELS", "32",
    "MODEL.SOTR.NUM_MASKS", "32",
    "MODEL.SOTR.NUM_KERNELS", "32",
    "MODEL.SOTR.NUM_GRIDS", "[8, 6, 4, 3, 2]",
    "MODEL.SOTR.TRANSFORMER.NUM_LAYERS", "1",
]


def tiny_model(*extra: str):
    torch.manual_seed(0)
    cfg = setup_cfg(str(TOY), [*TINY, *extra], check_datasets=False)
    return build_model(cfg)


def rect_instances(h, w, rects, classes):
    """Rectangles (x0, y0, x1, y1) as instances of an h x w image."""
    masks = torch.zeros((len(rects), h, w), dtype=torch.bool)
    for m, (x0, y0, x1, y1) in zip(masks, rects):
        m[y0:y1, x0:x1] = True
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(rects, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_masks = BitMasks(masks)
    return inst


def batch():
    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.randint(0, 255, (3, 64, 64), generator=g, dtype=torch.uint8),
         "instances": rect_instances(64, 64, [(4, 6, 28, 30), (30, 20, 60, 58)], [0, 2])},
        {"image": torch.randint(0, 255, (3, 56, 64), generator=g, dtype=torch.uint8),
         "instances": rect_instances(56, 64, [(10, 10, 50, 40)], [1])},
    ]


def test_losses_finite_and_decreasing():
    model = tiny_model()
    model.train()
    data = batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(15):
        losses = model(data)
        assert set(losses) == {"loss_ins", "loss_cate"}
        assert all(torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.7 * totals[0], totals


@pytest.mark.parametrize("case", ["out_of_range", "empty_mask", "no_instances"])
def test_batch_without_positive_cell(case):
    model = tiny_model("MODEL.SOTR.FPN_SCALE_RANGES", "[[1, 2], [2, 3], [3, 4], [4, 5], [5, 6]]")
    model.train()
    data = batch()
    if case == "empty_mask":
        for d in data:
            d["instances"].gt_masks = BitMasks(torch.zeros_like(d["instances"].gt_masks.tensor))
        model = tiny_model()  # default ranges: only the empty masks keep the cells negative
        model.train()
    elif case == "no_instances":
        for d in data:
            d["instances"] = d["instances"][:0]
    losses = model(data)
    assert losses["loss_ins"].item() == 0.0
    assert losses["loss_ins"].requires_grad, "must stay connected to the graph (DDP)"
    assert torch.isfinite(losses["loss_cate"]) and losses["loss_cate"].item() > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every trainable parameter gets a gradient"
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("boxes_from_masks", [True, False])
def test_inference_returns_instances_at_output_size(boxes_from_masks):
    # Score threshold 0 makes every cell a candidate, so random weights still give detections.
    model = tiny_model("MODEL.SOTR.SCORE_THR", "0.0", "MODEL.SOTR.BOXES_FROM_MASKS", str(boxes_from_masks))
    model.eval()
    g = torch.Generator().manual_seed(1)
    inputs = [
        {"image": torch.randint(0, 255, (3, 64, 80), generator=g, dtype=torch.uint8), "height": 128, "width": 160},
        # no height/width: output at the input size
        {"image": torch.randint(0, 255, (3, 48, 64), generator=g, dtype=torch.uint8)},
    ]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for out, size in zip(outputs, [(128, 160), (48, 64)]):
        inst = out["instances"]
        assert isinstance(inst, Instances)
        assert inst.image_size == size
        n = len(inst)
        assert inst.pred_masks.shape == (n, *size) and inst.pred_masks.dtype == torch.bool
        assert inst.scores.shape == (n,) and inst.pred_classes.dtype == torch.int64
        assert isinstance(inst.pred_boxes, Boxes) and inst.pred_boxes.tensor.shape == (n, 4)
        assert n <= model.inference_params.max_per_img
        assert (inst.scores[:-1] >= inst.scores[1:]).all()
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < 3)).all()
        if boxes_from_masks:
            expected = BitMasks(inst.pred_masks).get_bounding_boxes().tensor
            torch.testing.assert_close(inst.pred_boxes.tensor, expected)
        else:
            assert (inst.pred_boxes.tensor == 0).all()
    assert len(outputs[0]["instances"]) > 0


def test_empty_inference_result_is_typed():
    model = tiny_model("MODEL.SOTR.SCORE_THR", "1.0")
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.zeros((3, 64, 64), dtype=torch.uint8), "height": 32, "width": 40}])
    inst = out[0]["instances"]
    assert len(inst) == 0 and inst.image_size == (32, 40)
    assert inst.pred_masks.shape == (0, 32, 40) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_classes.dtype == torch.int64 and inst.pred_boxes.tensor.shape == (0, 4)


def test_feature_shapes_and_cell_count():
    model = tiny_model()
    model.eval()
    images = model.preprocess_image([{"image": torch.zeros((3, 70, 100), dtype=torch.uint8)}])
    assert images.tensor.shape[-2:] == (96, 128)  # padded to a multiple of 32
    with torch.no_grad():
        cate, kernels, mask_features = model.predict(images)
    grids = [8, 6, 4, 3, 2]
    assert [c.shape for c in cate] == [(1, 3, s, s) for s in grids]
    assert [k.shape for k in kernels] == [(1, 32, s, s) for s in grids]
    assert mask_features.shape == (1, 32, 24, 32)  # stride 4 of the padded canvas
    assert (mask_features >= 0).all()


def test_construction_checks():
    with pytest.raises(ValueError, match="NUM_KERNELS"):
        tiny_model("MODEL.SOTR.NUM_KERNELS", "16")
    with pytest.raises(ValueError, match="NUM_GRIDS"):
        tiny_model("MODEL.SOTR.NUM_GRIDS", "[8, 6, 4, 3]")
    with pytest.raises(ValueError, match="INSTANCE_IN_CHANNELS"):
        tiny_model("MODEL.SOTR.INSTANCE_IN_CHANNELS", "64")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_step_and_inference():
    model = tiny_model("MODEL.DEVICE", "cuda", "MODEL.SOTR.SCORE_THR", "0.0").cuda()
    model.train()
    losses = model(batch())
    assert all(v.is_cuda and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        inst = model([{"image": batch()[0]["image"], "height": 32, "width": 32}])[0]["instances"]
    assert inst.pred_masks.is_cuda and inst.pred_masks.shape[1:] == (32, 32)
