"""Every exportable model of the project, exported to ONNX from a small config and run by
onnxruntime on three differently sized images: raw outputs within 1e-3 of PyTorch's and final masks
agreeing on >= 99.5% of pixels; the adapter's PyTorch path reproduces the model's own predictions."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

import cft  # noqa: F401  (registers the adapters)
import mask2former  # noqa: F401
import sotr  # noqa: F401
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

CONFIGS = [
    "configs/mask2former/toy/maskformer2_R18_toy_instance.yaml",
    "configs/mask2former/toy/maskformer2_R18_toy_panoptic.yaml",
    "configs/mask2former/toy/maskformer2_R18_toy_semantic.yaml",
    "configs/sotr/toy/SOTR_R18_toy.yaml",
    "configs/cft/toy/cft_R18_toy.yaml",
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
    model = build_model(cfg).eval()
    adapter = build_export_adapter(model)
    preprocess = Preprocessor.from_config(cfg, adapter.size_divisibility)
    images = _images()
    # Exported at the first image's size; the others test the dynamic height and width.
    path = export_adapter(adapter, torch.from_numpy(preprocess(images[0])[0]), "onnx", str(tmp_path))
    predictor = OnnxPredictor(cfg, path, adapter)
    for i, image in enumerate(images):
        x, image_size = preprocess(image)
        input_size, output_size = tuple(x.shape[-2:]), image.shape[:2]

        reference = run_adapter(adapter, x)
        outputs = predictor.run_network(x)
        for name, a, b in zip(adapter.output_names, outputs, reference):
            assert a.shape == b.shape, (name, a.shape, b.shape)
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


def _resized(cfg, image):
    from detectron2.data import transforms as T

    original = image[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else image
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    return resize.get_transform(original).apply_image(original)
