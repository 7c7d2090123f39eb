"""Export errors name the blocking operator and model part; pre-processing matches the models' own;
the adapter registry refuses unknown models."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

import mask2former  # noqa: F401  (registers the adapters)
import transfiner  # noqa: F401
from segcommon.deploy import ExportAdapter, ExportError, Preprocessor, build_export_adapter, export_adapter
from segcommon.engine import setup_cfg

pytest.importorskip("onnxscript", reason="the ONNX exporter needs the deploy extra: pip install -e '.[deploy]'")


class _CumMax(nn.Module):
    def forward(self, x):
        return torch.cummax(x, dim=-1).values  # no ONNX translation exists for aten.cummax


class _ValueBranch(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # a branch on a tensor value: torch.export cannot trace it
            return x * 2
        return x


class _Head(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.block = block

    def forward(self, x):
        return self.block(self.conv(x))


class _Model(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.head = _Head(block)
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1))
        self.register_buffer("pixel_std", torch.ones(3, 1, 1))


class _Adapter(ExportAdapter):
    output_names = ("out",)

    def forward(self, image):
        return (self.model.head(image),)


@pytest.mark.parametrize(
    "block, expected",
    [
        (_CumMax, ["aten.cummax", "head.block (_CumMax)"]),  # fails in the ONNX translation
        (_ValueBranch, ["head.block (_ValueBranch)", "if x.sum() > 0"]),  # fails in torch.export
    ],
    ids=["unsupported-operator", "value-dependent-branch"],
)
def test_failure_names_operator_or_source_and_model_part(block, expected, tmp_path):
    adapter = _Adapter(_Model(block())).eval()
    with pytest.raises(ExportError) as e:
        export_adapter(adapter, torch.randn(1, 3, 64, 64), "onnx", str(tmp_path))
    for text in expected:
        assert text in str(e.value)


def test_unknown_meta_architecture_is_refused():
    with pytest.raises(KeyError, match="no export adapter for meta-architecture 'Linear'"):
        build_export_adapter(nn.Linear(2, 2))


def test_sample_size_must_match_size_divisibility(tmp_path):
    cfg = setup_cfg("configs/mask2former/toy/maskformer2_R18_toy_instance.yaml", [], check_datasets=False)
    adapter = build_export_adapter(build_model(cfg))
    with pytest.raises(ValueError, match="multiple of the size divisibility 32"):
        export_adapter(adapter, torch.zeros(1, 3, 100, 128), "onnx", str(tmp_path))


@pytest.mark.parametrize("fmt", ["RGB", "BGR"])
def test_preprocessor_matches_the_model_input(fmt):
    """Resize, format, normalisation and padding as DefaultPredictor + MaskFormer.preprocess_image."""
    from detectron2.data import transforms as T

    cfg = setup_cfg("configs/mask2former/toy/maskformer2_R18_toy_instance.yaml", ["INPUT.FORMAT", fmt],
                    check_datasets=False)
    model = build_model(cfg).eval()
    image = np.random.RandomState(0).randint(0, 256, (90, 130, 3), dtype=np.uint8)
    x, image_size = Preprocessor.from_config(cfg, model.size_divisibility)(image)

    original = image[:, :, ::-1] if fmt == "RGB" else image
    resized = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST).get_transform(original)
    resized = resized.apply_image(original)
    tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
    expected = model.preprocess_image([{"image": tensor}])
    assert image_size == tuple(expected.image_sizes[0]) == (128, 185)
    assert x.shape == tuple(expected.tensor.shape) == (1, 3, 128, 192)
    assert torch.equal(torch.from_numpy(x), expected.tensor)


def test_preprocessor_rejects_empty_images():
    p = Preprocessor(128, 256, "RGB", [0, 0, 0], [1, 1, 1], 32)
    with pytest.raises(ValueError, match="non-empty"):
        p(np.zeros((0, 10, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_program_and_torchscript_formats_run(fmt, tmp_path):
    """The .pt2 program accepts another size (dynamic height and width); TorchScript runs at the traced size."""
    import cft  # noqa: F401

    torch.manual_seed(0)
    cfg = setup_cfg("configs/cft/toy/cft_R18_toy.yaml", [], check_datasets=False)
    adapter = build_export_adapter(build_model(cfg))
    path = export_adapter(adapter, torch.randn(1, 3, 96, 128), fmt, str(tmp_path))
    loaded = torch.export.load(path).module() if fmt == "export" else torch.jit.load(path)
    x = torch.randn(1, 3, 128, 80) if fmt == "export" else torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        (expected,) = adapter(x)
        (actual,) = loaded(x)
    assert actual.shape == expected.shape == (1, 6, *x.shape[-2:])
    assert torch.allclose(actual, expected, atol=1e-4)
