"""The compiled CPU RoIAlign equals torchvision's kernels bitwise, forward and backward, and serves
Detectron2's ROIAlign once registered; unregistering restores torchvision's kernels."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
from detectron2.layers import ROIAlign
from torchvision.ops import roi_align

from conftest import REPO
from segcommon.layers.roi_align_fast import (
    fast_roi_align_registered,
    load_roi_align_extension,
    register_fast_roi_align,
    unregister_fast_roi_align,
)

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler to build the kernel"
)


@pytest.fixture
def torchvision_kernels():
    """Runs the test with torchvision's kernels and leaves the registration as it found it."""
    was = fast_roi_align_registered()
    unregister_fast_roi_align()
    yield
    if was:
        register_fast_roi_align()


def make_inputs(dtype, n=2, c=5, h=13, w=17, k=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    xy = torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([w * 4, h * 4], dtype=dtype) - 8
    wh = torch.rand(k, 2, generator=g, dtype=dtype) * 40
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0] = torch.tensor([-30.0, -20.0, 90.0, 70.0], dtype=dtype)  # beyond every border
    boxes[1] = torch.tensor([10.0, 10.0, 10.0, 10.0], dtype=dtype)  # empty box
    boxes[2] = torch.tensor([80.0, 60.0, 95.0, 70.0], dtype=dtype)  # mostly outside
    index = torch.randint(0, n, (k, 1), generator=g).to(dtype)
    return x, torch.cat([index, boxes], 1), torch.randn(k, c, 7, 6, generator=g, dtype=dtype)


def forward_backward(x, rois, grad, ratio, aligned):
    x = x.clone().requires_grad_()
    y = roi_align(x, rois, (7, 6), 0.25, ratio, aligned)
    (gx,) = torch.autograd.grad(y, x, grad)
    return y, gx


def test_extension_builds():
    assert load_roi_align_extension() is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ratio, aligned", [(0, True), (0, False), (2, True), (1, False)])
def test_bitwise_equal_to_torchvision(torchvision_kernels, dtype, ratio, aligned):
    x, rois, grad = make_inputs(dtype)
    y_ref, g_ref = forward_backward(x, rois, grad, ratio, aligned)
    assert register_fast_roi_align()
    y, g = forward_backward(x, rois, grad, ratio, aligned)
    assert torch.equal(y, y_ref)
    assert torch.equal(g, g_ref)
    assert g_ref.abs().sum() > 0  # the gradient reaches the input


def test_direct_calls_match_operator_signatures(torchvision_kernels):
    ext = load_roi_align_extension()
    x, rois, grad = make_inputs(torch.float32)
    y = ext.forward(x, rois, 0.25, 7, 6, 0, True)
    assert torch.equal(y, roi_align(x, rois, (7, 6), 0.25, 0, True))
    gx = ext.backward(grad, rois, 0.25, 7, 6, *x.shape, 0, True)
    ref = torch.ops.torchvision._roi_align_backward(grad, rois, 0.25, 7, 6, *x.shape, 0, True)
    assert torch.equal(gx, ref)


def test_no_rois_and_non_contiguous_input(torchvision_kernels):
    x, rois, _ = make_inputs(torch.float32)
    x_nc = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, other strides
    ref = roi_align(x, rois, (7, 6), 0.25, 0, True)
    assert register_fast_roi_align()
    assert torch.equal(roi_align(x_nc, rois, (7, 6), 0.25, 0, True), ref)
    empty = roi_align(x, rois[:0], (7, 6), 0.25, 0, True)
    assert empty.shape == (0, 5, 7, 6)
    assert roi_align(x, rois, (7, 6), 0.25, 0, True).is_contiguous()  # as torchvision returns it


def test_detectron2_roialign_uses_it_and_unregister_restores(torchvision_kernels, monkeypatch):
    import segcommon.layers.roi_align_fast as fast

    x, rois, _ = make_inputs(torch.float32)
    layer = ROIAlign((7, 6), 0.25, 0, aligned=True)
    ref = layer(x, rois)
    calls = []
    ext = load_roi_align_extension()

    class Spy:
        def forward(self, *args):
            calls.append(args[3:5])
            return ext.forward(*args)

        def backward(self, *args):
            return ext.backward(*args)

    assert register_fast_roi_align()
    monkeypatch.setattr(fast._EXTENSION, "_module", Spy())
    assert torch.equal(layer(x, rois), ref)
    assert calls == [(7, 6)]
    unregister_fast_roi_align()
    assert not fast_roi_align_registered()
    assert torch.equal(layer(x, rois), ref)
    assert calls == [(7, 6)]  # torchvision's kernel ran


def test_environment_variable_keeps_torchvision():
    code = (
        "from segcommon.layers.roi_align_fast import register_fast_roi_align, fast_roi_align_registered\n"
        "print(register_fast_roi_align(), fast_roi_align_registered())\n"
    )
    env = dict(os.environ, SEGZOO_ROIALIGN_IMPL="torchvision")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_cpu_configs_register_it():
    from segcommon.engine import setup_cfg

    unregister_fast_roi_align()
    setup_cfg(str(REPO / "configs/baselines/mask_rcnn_R18_FPN_toy.yaml"), ["MODEL.DEVICE", "cpu"], check_datasets=False)
    assert fast_roi_align_registered()
