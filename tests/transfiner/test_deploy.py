"""The export path of Transfiner's refinement (fixed slots, both write-back paths computed and one
picked by the batch-wide condition) equals the mask head's own ``refine``; the adapter refuses
models it cannot export."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from conftest import REPO
from segcommon.deploy import ExportError, export_adapter
from segcommon.engine import setup_cfg
from transfiner.deploy import GeneralizedRCNNExportAdapter, _refine_slots

TOY = str(REPO / "configs" / "transfiner" / "toy" / "transfiner_R18_FPN_toy.yaml")


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(0)
    cfg = setup_cfg(TOY, [], check_datasets=False)
    return build_model(cfg).eval().roi_heads.mask_head


def _inputs(n: int, incoherence: torch.Tensor, channels: int = 64):
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(n, 1, 28, 28, generator=g)
    x14 = torch.randn(n, channels, 14, 14, generator=g)
    fine = [torch.randn(n, channels, s, s, generator=g) for s in (28, 56, 112)]
    return coarse, incoherence, x14, fine


def _pad(x: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros((rows - len(x), *x.shape[1:]))])


@pytest.mark.parametrize(
    "low, high, middle_nodes",
    [(0.0, 1.0, True), (1e-5, 0.1, False)],  # 0.1 < the middle-level threshold 0.125: that stage is skipped
    ids=["all-levels", "middle-level-skipped"],
)
@pytest.mark.parametrize("smoothing", [False, True], ids=["plain", "demo-smoothing"])
def test_slot_refinement_equals_the_head(head, low, high, middle_nodes, smoothing, monkeypatch):
    monkeypatch.setattr(head, "demo_smoothing", smoothing)
    n, slots = 3, 5
    incoherence = low + (high - low) * torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    coarse, incoherence, x14, fine = _inputs(n, incoherence)
    assert bool((incoherence >= 0.125).any()) == middle_nodes
    with torch.no_grad():
        expected = head.refine(coarse, incoherence, x14, fine)
        occupied = torch.arange(slots) < n
        actual = _refine_slots(
            head, _pad(coarse, slots), _pad(incoherence, slots), _pad(x14, slots), [_pad(f, slots) for f in fine],
            occupied,
        )
    assert actual.shape == (slots, 1, 112, 112)
    torch.testing.assert_close(actual[:n], expected, rtol=0, atol=1e-5)
    # The refinement did change the masks (not a pass-through of the upsampled coarse map).
    assert (expected - torch.nn.functional.interpolate(coarse, (112, 112), mode="bilinear")).abs().max() > 1e-2


def test_adapter_refuses_models_without_mask_head():
    cfg = setup_cfg(TOY, ["MODEL.MASK_ON", "False"], check_datasets=False)
    with pytest.raises(NotImplementedError, match="mask head"):
        GeneralizedRCNNExportAdapter(build_model(cfg))


def test_adapter_refuses_cascade_box_heads():
    cfg = setup_cfg(TOY, ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"],
                    check_datasets=False)
    with pytest.raises(NotImplementedError, match="not CascadeROIHeads"):
        GeneralizedRCNNExportAdapter(build_model(cfg))


def test_postprocess_leaves_the_network_outputs_unchanged():
    adapter = GeneralizedRCNNExportAdapter(build_model(setup_cfg(TOY, [], check_datasets=False)))
    outputs = [
        np.array([[10.0, 20.0, 60.0, 90.0]], dtype=np.float32),
        np.array([0.9], dtype=np.float32),
        np.array([1]),
        np.full((1, 1, 112, 112), 0.8, dtype=np.float32),
    ]
    before = [o.copy() for o in outputs]
    result = adapter.postprocess(outputs, (128, 128), (100, 128), (200, 256))["instances"]
    assert torch.allclose(result.pred_boxes.tensor, torch.tensor([[20.0, 40.0, 120.0, 180.0]]))
    assert result.pred_masks.shape == (1, 200, 256) and int(result.pred_masks.sum()) > 0
    for a, b in zip(outputs, before):
        assert np.array_equal(a, b)


def test_torchscript_is_refused_and_the_program_runs_at_another_size(tmp_path):
    """A trace would freeze the detection counts: refused by name. The torch.export program takes
    another image size and reproduces the adapter."""
    torch.manual_seed(0)
    baseline = str(REPO / "configs" / "baselines" / "mask_rcnn_R18_FPN_toy.yaml")
    adapter = GeneralizedRCNNExportAdapter(build_model(setup_cfg(baseline, [], check_datasets=False)).eval())
    with pytest.raises(ExportError, match="cannot be traced to TorchScript"):
        export_adapter(adapter, torch.randn(1, 3, 128, 160), "torchscript", str(tmp_path))
    program = torch.export.load(export_adapter(adapter, torch.randn(1, 3, 128, 160), "export", str(tmp_path)))
    x, size = torch.randn(1, 3, 96, 192), torch.tensor([90, 180])
    with torch.no_grad():
        expected, actual = adapter(x, size), program.module()(x, size)
    assert len(expected[0]) > 0
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        torch.testing.assert_close(a, e, rtol=0, atol=1e-4)
