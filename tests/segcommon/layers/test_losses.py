"""segcommon.layers.losses against direct formulas and the Mask2Former golden values."""
import json
import math

import pytest
import torch

from segcommon.layers import batch_dice_loss, batch_sigmoid_ce_loss, dice_loss, sigmoid_ce_loss
from conftest import shared_path


def _golden(case: str) -> dict:
    with open(shared_path("reference", "mask2former", "golden_small.json")) as f:
        return json.load(f)[case]


def _direct_bce(x: float, t: float) -> float:
    s = 1.0 / (1.0 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def _direct_dice(xs, ts) -> float:
    s = [1.0 / (1.0 + math.exp(-x)) for x in xs]
    inter = sum(a * b for a, b in zip(s, ts))
    return 1 - (2 * inter + 1) / (sum(s) + sum(ts) + 1)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, generator=g, dtype=torch.float64) * 3
    t = torch.rand(4, 9, generator=g, dtype=torch.float64)
    t[0] = (t[0] > 0.5).double()  # one hard, three soft targets
    t[1] = 0.0  # an empty target
    return x, t


def test_sigmoid_ce_loss_matches_formula(data):
    x, t = data
    expected = sum(
        sum(_direct_bce(a, b) for a, b in zip(xr.tolist(), tr.tolist())) / x.shape[1] for xr, tr in zip(x, t)
    ) / 2.5
    assert sigmoid_ce_loss(x, t, 2.5).item() == pytest.approx(expected, rel=1e-10)


def test_dice_loss_matches_formula(data):
    x, t = data
    expected = sum(_direct_dice(xr.tolist(), tr.tolist()) for xr, tr in zip(x, t)) / 3.0
    assert dice_loss(x, t, 3.0).item() == pytest.approx(expected, rel=1e-10)


def test_per_mask_losses_flatten_dense_masks(data):
    x, t = data
    x2, t2 = x.view(4, 3, 3), t.view(4, 3, 3)
    assert torch.allclose(dice_loss(x2, t2, 1.0), dice_loss(x, t, 1.0))
    assert torch.allclose(sigmoid_ce_loss(x2, t2, 1.0), sigmoid_ce_loss(x, t, 1.0))


def test_batch_losses_equal_pairwise_per_mask_losses(data):
    x, t = data
    tgt = t[:3]
    d, c = batch_dice_loss(x, tgt), batch_sigmoid_ce_loss(x, tgt)
    assert d.shape == c.shape == (4, 3)
    for n in range(4):
        for m in range(3):
            xn, tm = x[n : n + 1], tgt[m : m + 1]
            assert d[n, m].item() == pytest.approx(dice_loss(xn, tm, 1).item(), rel=1e-10)
            assert c[n, m].item() == pytest.approx(sigmoid_ce_loss(xn, tm, 1).item(), rel=1e-10)


def test_perfect_prediction_and_empty_inputs():
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    x = (t * 2 - 1) * 50  # saturated, correct logits
    assert dice_loss(x, t, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert sigmoid_ce_loss(x, t, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(0, 4)
    assert dice_loss(empty, empty, 1.0).item() == 0.0
    assert sigmoid_ce_loss(empty, empty, 1.0).item() == 0.0
    assert batch_dice_loss(x, empty).shape == (1, 0)
    assert batch_sigmoid_ce_loss(x, empty).shape == (1, 0)


def test_batch_sigmoid_ce_is_stable_for_large_logits():
    x = torch.tensor([[200.0, -200.0]])
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    c = batch_sigmoid_ce_loss(x, t)
    assert torch.isfinite(c).all()
    assert c[0, 0].item() == pytest.approx(200.0) and c[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_losses_have_gradients(data):
    x, t = data
    x = x.clone().requires_grad_(True)
    (dice_loss(x, t, 1.0) + sigmoid_ce_loss(x, t, 1.0)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_golden_mask_losses_on_points():
    g = _golden("mask_losses_on_points")
    x, t = torch.tensor(g["point_logits"]), torch.tensor(g["point_labels"])
    assert sigmoid_ce_loss(x, t, g["num_masks"]).item() == pytest.approx(g["loss_mask"], rel=1e-5)
    assert dice_loss(x, t, g["num_masks"]).item() == pytest.approx(g["loss_dice"], rel=1e-5)


def test_golden_matcher_costs():
    g = _golden("matcher_costs")
    x, t = torch.tensor(g["pred_point_logits"]), torch.tensor(g["tgt_point_labels"])
    for fn, name in ((batch_sigmoid_ce_loss, "cost_mask"), (batch_dice_loss, "cost_dice")):
        torch.testing.assert_close(fn(x, t), torch.tensor(g[name]), rtol=1e-5, atol=1e-6)
