"""Every model of the project, exported to ONNX from a small config and run by onnxruntime on three
differently sized images: raw outputs within 1e-3 of PyTorch's and final masks agreeing on >= 99.5% of
pixels; the adapter's PyTorch path reproduces the model's own predictions. The R-CNN detectors
(Transfiner, the Mask R-CNN baseline) have data-dependent output sizes: the same graph also serves
images with fewer detections than refinement slots, and with none."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

import cft  # noqa: F401  (registers the adapters)
import mask2former  # noqa: F401
import sotr  # noqa: F401
import transfiner  # noqa: F401
from segcommon.deploy import (
    OnnxPredictor,
    Preprocessor,
    build_export_adapter,
    export_adapter,
    final_masks,
    mask_agreement,
    run_adapter,
)
from segcommon.engine import setup_cfg

pytest.importorskip("onnxruntime", reason="needs the deploy extra: pip install -e '.[deploy]'")
pytest.importorskip("onnxscript", reason="needs the deploy extra: pip install -e '.[deploy]'")

TRANSFINER = "configs/transfiner/toy/transfiner_R18_FPN_toy.yaml"
CONFIGS = [
    "configs/mask2former/toy/maskformer2_R18_toy_instance.yaml",
    "configs/mask2former/toy/maskformer2_R18_toy_panoptic.yaml",
    "configs/mask2former/toy/maskformer2_R18_toy_semantic.yaml",
    "configs/sotr/toy/SOTR_R18_toy.yaml",
    "configs/cft/toy/cft_R18_toy.yaml",
    TRANSFINER,
    "configs/baselines/mask_rcnn_R18_FPN_toy.yaml",
]
# Original sizes (H, W); the test resize (short side 128, long side <= 256) makes three different
# network inputs: 128 x 171, 171 x 128 and 128 x 128 before padding.
IMAGE_SIZES = [(96, 128), (150, 112), (100, 100)]


def _images():
    rng = np.random.RandomState(0)
    images = []
    for h, w in IMAGE_SIZES:
        image = np.full((h, w, 3), rng.randint(0, 256, 3), dtype=np.uint8)
        for _ in range(4):  # a few flat rectangles on a flat background, plus noise
            y0, x0 = rng.randint(0, h - 20), rng.randint(0, w - 20)
            image[y0:y0 + rng.randint(10, 40), x0:x0 + rng.randint(10, 40)] = rng.randint(0, 256, 3)
        images.append(np.clip(image + rng.randint(-10, 11, image.shape), 0, 255).astype(np.uint8))
    return images


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.split("/")[-1][:-5])
def test_onnx_matches_pytorch(config, tmp_path):
    torch.manual_seed(0)
    cfg = setup_cfg(config, [], check_datasets=False)
    _check_parity(cfg, build_model(cfg).eval(), _images(), tmp_path)


@pytest.mark.slow
def test_cft_sliding_windows_onnx_matches_pytorch(tmp_path):
    """The graph is the network on one window; the window loop runs around either runtime. 96 x 96
    windows at stride 64 give 2 x 3, 3 x 2 and 2 x 2 windows on the three inputs, the last ones
    shifted back inside the image."""
    torch.manual_seed(0)
    opts = ["MODEL.CFT.TEST.MODE", "slide", "MODEL.CFT.TEST.CROP_SIZE", "(96, 96)", "MODEL.CFT.TEST.STRIDE", "(64, 64)"]
    cfg = setup_cfg("configs/cft/toy/cft_R18_toy.yaml", opts, check_datasets=False)
    model = build_model(cfg).eval()
    calls = []
    model.backbone.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape[-2:])))
    _check_parity(cfg, model, _images(), tmp_path)
    # PyTorch ran the backbone on 96 x 96 windows only, 2 x 3 + 3 x 2 + 2 x 2 = 16 per pass (the adapter's
    # and the model's own); the export traced it once at the sample's size.
    assert calls.count((96, 96)) == 2 * 16 and len(calls) == 2 * 16 + 1, calls


@pytest.mark.slow
def test_transfiner_onnx_with_few_and_no_detections(tmp_path):
    """Refinement slots left empty, and an image without any detection, through the same graph."""
    torch.manual_seed(0)
    cfg = setup_cfg(TRANSFINER, [], check_datasets=False)
    model = build_model(cfg).eval()
    images = _images()
    predictor = model.roi_heads.box_predictor
    slots = model.roi_heads.mask_pooler.max_rois_test
    # Just above the second image's best score: no detection there (with a margin for the runtimes'
    # rounding); at most slots - 1 detections anywhere.
    predictor.test_score_thresh, predictor.test_topk_per_image = 0.0, -1
    adapter = build_export_adapter(model)
    preprocess = Preprocessor.from_config(cfg, adapter.size_divisibility)
    predictor.test_score_thresh = float(run_adapter(adapter, *preprocess(images[1]))[1].max()) + 1e-4
    predictor.test_topk_per_image = slots - 1
    counts = _check_parity(cfg, model, images, tmp_path)
    assert counts[1] == 0 and max(counts) == slots - 1, counts


def _check_parity(cfg, model, images, tmp_path):
    """Exports ``model`` at the first image's size and checks every image; returns the number of
    instances each image's result holds (None for other results)."""
    adapter = build_export_adapter(model)
    preprocess = Preprocessor.from_config(cfg, adapter.size_divisibility)
    # Exported at the first image's size; the others test the dynamic height and width.
    path = export_adapter(adapter, torch.from_numpy(preprocess(images[0])[0]), "onnx", str(tmp_path))
    predictor = OnnxPredictor(cfg, path, adapter)
    counts = []
    for i, image in enumerate(images):
        x, image_size = preprocess(image)
        input_size, output_size = tuple(x.shape[-2:]), image.shape[:2]

        reference = run_adapter(adapter, x, image_size)
        outputs = predictor.run_network(x, image_size)
        for name, a, b in zip(adapter.output_names, outputs, reference):
            assert a.shape == b.shape, (name, a.shape, b.shape)
            if a.size:
                assert np.abs(a - b).max() <= 1e-3, (name, float(np.abs(a - b).max()))

        onnx_result = predictor(image)
        torch_result = adapter.postprocess(reference, input_size, image_size, output_size)
        assert mask_agreement(onnx_result, torch_result) >= 0.995

        # The adapter path is the model's own: same input tensor, same post-processing.
        with torch.no_grad():
            tensor = torch.as_tensor(_resized(cfg, image).astype("float32").transpose(2, 0, 1))
            expected = model([{"image": tensor, "height": output_size[0], "width": output_size[1]}])[0]
        assert sorted(expected) == sorted(torch_result)
        assert torch.equal(final_masks(expected), final_masks(torch_result)), f"image {i}"
        counts.append(len(expected["instances"]) if "instances" in expected else None)
    return counts


def _resized(cfg, image):
    from detectron2.data import transforms as T

    original = image[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else image
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    return resize.get_transform(original).apply_image(original)
