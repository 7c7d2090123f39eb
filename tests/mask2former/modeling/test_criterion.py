"""SetCriterion: golden values, exact point-sampled losses, normalisation, deep supervision, training."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import get_uncertain_point_coords_with_randomness

from conftest import shared_path
from mask2former.modeling.criterion import SetCriterion
from mask2former.modeling.matcher import HungarianMatcher

K = 3  # classes (+1 no-object)
NUM_POINTS = 48


def _golden(case: str) -> dict:
    with open(shared_path("reference", "mask2former", "golden_small.json")) as f:
        return json.load(f)[case]


def _criterion(num_classes=K, eos_coef=0.1, aux=2, num_points=NUM_POINTS, importance=0.75):
    weight_dict = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    for i in range(aux):
        weight_dict.update({f"{k}_{i}": v for k, v in list(weight_dict.items())[:3]})
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points)
    return SetCriterion(
        num_classes, matcher=matcher, weight_dict=weight_dict, eos_coef=eos_coef, losses=["labels", "masks"],
        num_points=num_points, oversample_ratio=3.0, importance_sample_ratio=importance,
    )


def _targets(size=32):
    """Image 0: 2 boxes (bool masks); image 1: 3 boxes (uint8 masks, as the COCO LSJ mapper)."""
    def rects(boxes, dtype, labels):
        m = torch.zeros(len(boxes), size, size, dtype=dtype)
        for i, (y0, y1, x0, x1) in enumerate(boxes):
            m[i, y0:y1, x0:x1] = 1
        return {"labels": torch.tensor(labels), "masks": m}

    return [
        rects([(2, 14, 2, 20), (16, 30, 8, 28)], torch.bool, [0, 2]),
        rects([(0, 10, 0, 10), (12, 32, 0, 16), (4, 24, 18, 30)], torch.uint8, [1, 1, 0]),
    ]


def test_empty_weight_buffer_in_state_dict():
    crit = _criterion(num_classes=4, eos_coef=0.1)
    holder = torch.nn.Module()
    holder.criterion = crit
    sd = holder.state_dict()
    assert list(sd) == ["criterion.empty_weight"]
    torch.testing.assert_close(sd["criterion.empty_weight"], torch.tensor([1.0, 1.0, 1.0, 1.0, 0.1]))


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="unknown losses"):
        SetCriterion(2, HungarianMatcher(1, 1, 1, 4), {}, 0.1, ["labels", "boxes"], 4, 3.0, 0.75)


def test_golden_loss_labels():
    g = _golden("loss_labels")
    crit = _criterion(num_classes=g["num_classes"], eos_coef=g["eos_coef"])
    targets = [{"labels": torch.tensor(lab)} for lab in g["targets_labels"]]
    indices = [(torch.tensor(i), torch.tensor(j)) for i, j in g["indices"]]
    out = crit.loss_labels({"pred_logits": torch.tensor(g["pred_logits"])}, targets, indices, 1.0)
    assert out["loss_ce"].dtype == torch.float32
    assert out["loss_ce"].item() == pytest.approx(g["loss_ce"], rel=1e-5)


def test_loss_labels_matches_weighted_mean_formula():
    torch.manual_seed(0)
    crit = _criterion()
    logits = torch.randn(2, 4, K + 1, dtype=torch.float64)
    targets = [{"labels": torch.tensor([2, 0])}, {"labels": torch.tensor([1])}]
    indices = [(torch.tensor([1, 3]), torch.tensor([1, 0])), (torch.tensor([0]), torch.tensor([0]))]
    y = [[K, 0, K, 2], [1, K, K, K]]  # query 1 <- target 1 (label 0), query 3 <- target 0 (label 2)
    w = [1.0] * K + [0.1]
    num = den = 0.0
    for b in range(2):
        for q in range(4):
            ce = -torch.log_softmax(logits[b, q], -1)[y[b][q]].item()
            num += w[y[b][q]] * ce
            den += w[y[b][q]]
    out = crit.loss_labels({"pred_logits": logits}, targets, indices, 1.0)["loss_ce"]
    assert out.dtype == torch.float32  # logits are cast to float32, like the reference
    assert out.item() == pytest.approx(num / den, rel=1e-5)


def test_loss_masks_equals_direct_importance_sampled_computation():
    """Same RNG state -> same points: the criterion equals a from-scratch implementation."""
    g = torch.Generator().manual_seed(1)
    pred_masks = torch.randn(2, 5, 8, 8, generator=g) * 3
    targets = _targets()
    indices = [
        (torch.tensor([0, 3]), torch.tensor([1, 0])),
        (torch.tensor([1, 2, 4]), torch.tensor([2, 0, 1])),
    ]
    crit = _criterion()
    torch.manual_seed(7)
    out = crit.loss_masks({"pred_masks": pred_masks}, targets, indices, 2.5)

    src = torch.stack([pred_masks[b, q] for b, (qs, _) in enumerate(indices) for q in qs.tolist()])[:, None]
    tgt = torch.stack(
        [targets[b]["masks"][j].float() for b, (_, js) in enumerate(indices) for j in js.tolist()]
    )
    torch.manual_seed(7)
    coords = get_uncertain_point_coords_with_randomness(src, lambda logits: -logits.abs(), NUM_POINTS, 3.0, 0.75)
    grid = (2 * coords - 1)[:, :, None]  # (N, P, 1, 2)
    x = F.grid_sample(src, grid, mode="bilinear", align_corners=False).flatten(1)
    t = F.grid_sample(tgt[:, None], grid, mode="bilinear", align_corners=False).flatten(1)
    s = torch.sigmoid(x)
    bce = -(t * torch.log(s) + (1 - t) * torch.log(1 - s))
    expected_mask = bce.mean(1).sum() / 2.5
    expected_dice = (1 - (2 * (s * t).sum(1) + 1) / (s.sum(1) + t.sum(1) + 1)).sum() / 2.5
    assert out["loss_mask"].item() == pytest.approx(expected_mask.item(), rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(expected_dice.item(), rel=1e-5)


def test_importance_sampling_prefers_uncertain_points():
    # Logits are 0 (maximally uncertain) in the left half, +-20 elsewhere.
    pred = torch.full((1, 1, 16, 16), 20.0)
    pred[..., :8] = 0.0
    torch.manual_seed(0)
    coords = get_uncertain_point_coords_with_randomness(pred, lambda logits: -logits.abs(), 400, 3.0, 0.75)
    # >= 75% of the points chosen by uncertainty, nearly all of which lie in the left half.
    assert (coords[0, :, 0] < 0.5).float().mean() > 0.8


def test_loss_masks_on_constant_predictions_and_padding():
    """A constant logit c gives closed forms in the fraction f of points inside the target. Image 1's
    all-ones 32x32 target is zero-padded (bottom/right) to image 0's 64x64, so it covers f = 1/4 of
    the unit square (a resize would give f = 1). Maps are large so that the zero padding of
    grid_sample at the borders barely matters."""
    c = 1.5
    pred_masks = torch.full((2, 2, 64, 64), c)
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 64, 64, dtype=torch.bool)},
               {"labels": torch.tensor([1]), "masks": torch.ones(1, 32, 32, dtype=torch.bool)}]
    indices = [(torch.tensor([1]), torch.tensor([0])), (torch.tensor([0]), torch.tensor([0]))]
    P = 4000
    crit = _criterion(num_points=P, importance=0.0)  # uniform points only
    torch.manual_seed(0)
    out = crit.loss_masks({"pred_masks": pred_masks}, targets, indices, 2.0)
    s = 1 / (1 + math.exp(-c))
    bce_pos, bce_neg = math.log(1 + math.exp(-c)), math.log(1 + math.exp(c))

    def closed_form(f):
        bce = f * bce_pos + (1 - f) * bce_neg
        dice = 1 - (2 * s * f * P + 1) / (s * P + f * P + 1)
        return bce, dice

    (b0, d0), (b1, d1) = closed_form(1.0), closed_form(0.25)
    assert out["loss_mask"].item() == pytest.approx((b0 + b1) / 2.0, rel=0.03)
    assert out["loss_dice"].item() == pytest.approx((d0 + d1) / 2.0, rel=0.03)


def test_num_masks_is_averaged_over_workers_and_clamped(monkeypatch):
    from detectron2.utils import comm

    targets = _targets()  # 5 masks locally
    assert SetCriterion.get_num_masks(targets, torch.device("cpu")) == 5.0
    # Simulated 4 workers whose all-reduce adds 3 from the others: (5 + 3) / 4 = 2.
    monkeypatch.setattr(comm, "get_world_size", lambda: 4)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: t.add_(3.0))
    assert SetCriterion.get_num_masks(targets, torch.device("cpu")) == 2.0
    # 0 masks + 1 elsewhere over 4 workers = 0.25 -> clamped to 1.
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: t.add_(1.0))
    empty = [{"labels": torch.zeros(0, dtype=torch.int64)}]
    assert SetCriterion.get_num_masks(empty, torch.device("cpu")) == 1.0


def _outputs(requires_grad=False, B=2, Q=6, n_aux=2, seed=0):
    g = torch.Generator().manual_seed(seed)

    def one():
        return {
            "pred_logits": torch.randn(B, Q, K + 1, generator=g).requires_grad_(requires_grad),
            "pred_masks": torch.randn(B, Q, 8, 8, generator=g).requires_grad_(requires_grad),
        }

    out = one()
    out["aux_outputs"] = [one() for _ in range(n_aux)]
    return out


def test_forward_keys_unweighted_and_normalised():
    crit = _criterion()
    outputs, targets = _outputs(), _targets()
    torch.manual_seed(0)
    losses = crit(outputs, targets)
    expected = {f"{n}{s}" for n in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")}
    assert set(losses) == expected == set(crit.weight_dict)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    # Unweighted: recomputing the final set's losses with the same RNG state gives the same values.
    torch.manual_seed(0)
    indices = crit.matcher({k: v for k, v in outputs.items() if k != "aux_outputs"}, targets)
    ce = crit.loss_labels(outputs, targets, indices, 5.0)["loss_ce"]
    masks = crit.loss_masks(outputs, targets, indices, 5.0)  # num_masks = 2 + 3 targets
    assert losses["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert losses["loss_mask"].item() == pytest.approx(masks["loss_mask"].item(), rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(masks["loss_dice"].item(), rel=1e-6)
    # Without aux outputs only the three final losses are returned.
    no_aux = {k: v for k, v in outputs.items() if k != "aux_outputs"}
    assert set(crit(no_aux, targets)) == {"loss_ce", "loss_mask", "loss_dice"}


def test_every_loss_decreases_with_adam():
    torch.manual_seed(0)
    crit = _criterion()
    outputs, targets = _outputs(requires_grad=True), _targets()
    params = [outputs["pred_logits"], outputs["pred_masks"]]
    params += [t for aux in outputs["aux_outputs"] for t in aux.values()]
    opt = torch.optim.Adam(params, lr=0.1)

    def evaluate():
        # Fixed RNG for evaluation so that start and end are measured on the same random points.
        state = torch.get_rng_state()
        torch.manual_seed(1234)
        with torch.no_grad():
            losses = crit(outputs, targets)
        torch.set_rng_state(state)
        return {k: v.item() for k, v in losses.items()}

    before = evaluate()
    for _ in range(20):
        losses = crit(outputs, targets)
        total = sum(losses[k] * crit.weight_dict[k] for k in losses)
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        opt.step()
    after = evaluate()
    for k in before:
        assert math.isfinite(after[k])
        assert after[k] < before[k], f"{k}: {before[k]:.4f} -> {after[k]:.4f}"


def test_image_without_targets():
    crit = _criterion()
    outputs = _outputs(requires_grad=True)
    targets = _targets()
    targets[0] = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32)}
    losses = crit(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert torch.isfinite(outputs["pred_logits"].grad).all()
    # Image 0's queries are all "no object": its class logits still get a gradient, its masks none.
    assert outputs["pred_logits"].grad[0].abs().sum() > 0
    assert outputs["pred_masks"].grad[0].abs().sum() == 0 and outputs["pred_masks"].grad[1].abs().sum() > 0


def test_batch_without_any_target():
    crit = _criterion()
    outputs = _outputs(requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32, dtype=torch.uint8)}
    targets = [empty, dict(empty)]
    losses = crit(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice_1"].item() == 0.0
    assert losses["loss_ce"].item() > 0
    sum(losses.values()).backward()  # still differentiable (zero gradient for the masks)
    assert outputs["pred_masks"].grad is not None and outputs["pred_masks"].grad.abs().sum() == 0


def test_runs_under_autocast_with_low_precision_outputs():
    crit = _criterion()
    outputs = _outputs(n_aux=0)
    low = {k: v.bfloat16() for k, v in outputs.items() if k != "aux_outputs"}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = crit(low, _targets())
    assert losses["loss_ce"].dtype == torch.float32  # class loss computed in float32
    assert all(torch.isfinite(v) for v in losses.values())
