"""HungarianMatcher: golden costs, known optimal assignments, brute force, edge cases."""
import itertools
import json

import pytest
import torch
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment

from conftest import shared_path
from mask2former.modeling.matcher import HungarianMatcher


def _golden(case: str) -> dict:
    with open(shared_path("reference", "mask2former", "golden_small.json")) as f:
        return json.load(f)[case]


def _rect_masks(size: int, boxes) -> torch.Tensor:
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return masks


def test_golden_costs_and_assignment():
    g = _golden("matcher_costs")
    w = g["weights"]
    matcher = HungarianMatcher(cost_class=w["class"], cost_mask=w["mask"], cost_dice=w["dice"], num_points=7)
    costs = matcher.compute_costs(
        torch.tensor(g["pred_logits"]),
        torch.tensor(g["tgt_labels"]),
        torch.tensor(g["pred_point_logits"]),
        torch.tensor(g["tgt_point_labels"]),
    )
    for name in ("cost_class", "cost_mask", "cost_dice", "C"):
        assert costs[name].dtype == torch.float32
        torch.testing.assert_close(costs[name], torch.tensor(g[name]), rtol=1e-5, atol=1e-5)
    pred_idx, tgt_idx = linear_sum_assignment(costs["C"].numpy())
    assert pred_idx.tolist() == g["assignment_pred"]
    assert tgt_idx.tolist() == g["assignment_tgt"]


def test_golden_point_sample():
    g = _golden("point_sample")
    out = point_sample(torch.tensor(g["input"]), torch.tensor(g["coords_xy"]), align_corners=False)
    torch.testing.assert_close(out, torch.tensor(g["output"]), rtol=1e-5, atol=1e-5)


def test_recovers_permutation_of_identical_masks():
    # 3 targets at full resolution (32x32); predictions at 1/4 resolution (8x8) equal a permutation
    # of them (boxes aligned on 4-pixel blocks) plus 2 empty predictions.
    boxes = [(0, 16, 0, 16), (16, 32, 0, 32), (0, 16, 16, 32)]
    tgt = _rect_masks(32, boxes)
    low = _rect_masks(8, [tuple(v // 4 for v in b) for b in boxes]).float()
    pred_masks = torch.full((5, 8, 8), -10.0)
    queries = [3, 4, 1]  # target i is predicted by query queries[i]
    for tgt_i, q in enumerate(queries):
        pred_masks[q] = low[tgt_i] * 20 - 10
    labels = torch.tensor([0, 1, 0])
    pred_logits = torch.zeros(5, 3)  # uninformative classes: masks decide
    torch.manual_seed(0)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=256)
    (pred_idx, tgt_idx), = matcher({"pred_logits": pred_logits[None], "pred_masks": pred_masks[None]},
                                   [{"labels": labels, "masks": tgt}])
    assert pred_idx.dtype == tgt_idx.dtype == torch.int64
    assert pred_idx.tolist() == [1, 3, 4]  # sorted by prediction
    assert tgt_idx.tolist() == [2, 0, 1]


def test_optimal_where_greedy_is_wrong():
    # Class cost only. p(q0) = [0.50, 0.45, 0.05(no-object)], p(q1) = [0.40, 0.05, 0.55].
    # Greedy takes the cheapest pair first (q0-t0: -0.50), then q1-t1 (-0.05): total -0.55;
    # the optimum is q0-t1 + q1-t0 = -0.85.
    probs = torch.tensor([[0.50, 0.45, 0.05], [0.40, 0.05, 0.55]])
    outputs = {"pred_logits": probs.log()[None], "pred_masks": torch.zeros(1, 2, 4, 4)}
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.zeros(2, 8, 8, dtype=torch.uint8)}]
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, num_points=16)
    (pred_idx, tgt_idx), = matcher(outputs, targets)
    assert pred_idx.tolist() == [0, 1] and tgt_idx.tolist() == [1, 0]


def _brute_force(C: torch.Tensor) -> float:
    q, n = C.shape
    if q >= n:
        return min(sum(C[p[j], j].item() for j in range(n)) for p in itertools.permutations(range(q), n))
    return min(sum(C[i, p[i]].item() for i in range(q)) for p in itertools.permutations(range(n), q))


@pytest.mark.parametrize("seed", range(6))
def test_equals_brute_force_on_random_cases(seed):
    g = torch.Generator().manual_seed(seed)
    B, Q, K = 2, 5, 3
    num_tgts = [int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(4, 7, (1,), generator=g))]
    outputs = {
        "pred_logits": torch.randn(B, Q, K + 1, generator=g) * 2,
        "pred_masks": torch.randn(B, Q, 6, 6, generator=g) * 3,
    }
    targets = [
        {"labels": torch.randint(0, K, (n,), generator=g), "masks": torch.rand(n, 24, 24, generator=g) > 0.5}
        for n in num_tgts
    ]
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=64)
    torch.manual_seed(100 + seed)
    indices = matcher(outputs, targets)
    # Same RNG state -> same points -> the cost matrices the matcher solved.
    torch.manual_seed(100 + seed)
    for b, (pred_idx, tgt_idx) in enumerate(indices):
        t = targets[b]
        C = matcher.image_cost_matrix(
            outputs["pred_logits"][b], outputs["pred_masks"][b], t["labels"], t["masks"]
        )
        n = len(t["labels"])
        assert len(pred_idx) == len(tgt_idx) == min(Q, n)
        assert len(set(pred_idx.tolist())) == len(pred_idx) and len(set(tgt_idx.tolist())) == len(tgt_idx)
        assert pred_idx.tolist() == sorted(pred_idx.tolist())
        assert C[pred_idx, tgt_idx].sum().item() == pytest.approx(_brute_force(C), abs=1e-4)


def test_points_are_shared_by_predictions_and_targets(monkeypatch):
    import mask2former.modeling.matcher as matcher_module

    calls = []

    def recording_point_sample(input, coords, **kwargs):
        calls.append((input.shape[0], coords.clone(), kwargs))
        return point_sample(input, coords, **kwargs)

    monkeypatch.setattr(matcher_module, "point_sample", recording_point_sample)
    outputs = {"pred_logits": torch.randn(2, 4, 3), "pred_masks": torch.randn(2, 4, 8, 8)}
    targets = [{"labels": torch.tensor([0, 1, 1]), "masks": torch.rand(3, 32, 32) > 0.5} for _ in range(2)]
    HungarianMatcher(1.0, 1.0, 1.0, num_points=20)(outputs, targets)
    assert len(calls) == 4  # targets and predictions of each image
    for (n_t, c_t, kw_t), (n_p, c_p, kw_p) in (calls[0:2], calls[2:4]):
        assert (n_t, n_p) == (3, 4) and c_t.shape == (3, 20, 2) and c_p.shape == (4, 20, 2)
        assert kw_t == kw_p == {"align_corners": False}
        # One set of points for every mask of the image, predictions and targets alike.
        assert torch.equal(c_t, c_t[:1].expand_as(c_t)) and torch.equal(c_p[0], c_t[0])
        assert c_t.min() >= 0 and c_t.max() <= 1
    assert not torch.equal(calls[0][1][0], calls[2][1][0])  # new points for each image


def test_empty_targets_give_empty_indices():
    outputs = {"pred_logits": torch.randn(2, 4, 3), "pred_masks": torch.randn(2, 4, 8, 8)}
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32)},
        {"labels": torch.tensor([1]), "masks": torch.ones(1, 32, 32, dtype=torch.uint8)},
    ]
    indices = HungarianMatcher(2.0, 5.0, 5.0, num_points=16)(outputs, targets)
    assert indices[0][0].shape == indices[0][1].shape == (0,)
    assert indices[0][0].dtype == indices[0][1].dtype == torch.int64
    assert len(indices[1][0]) == 1
    # A flat zero-size masks tensor is accepted too.
    targets[0]["masks"] = torch.zeros(0)
    assert HungarianMatcher(2.0, 5.0, 5.0, num_points=16)(outputs, targets)[0][0].numel() == 0


def test_more_targets_than_queries():
    outputs = {"pred_logits": torch.randn(1, 2, 3), "pred_masks": torch.randn(1, 2, 8, 8)}
    targets = [{"labels": torch.tensor([0, 1, 0, 1]), "masks": torch.rand(4, 16, 16) > 0.5}]
    (pred_idx, tgt_idx), = HungarianMatcher(1.0, 1.0, 1.0, num_points=16)(outputs, targets)
    assert pred_idx.tolist() == [0, 1] and len(set(tgt_idx.tolist())) == 2


def test_invalid_configuration_and_inputs():
    with pytest.raises(ValueError, match="all cost weights are 0"):
        HungarianMatcher(0, 0, 0, num_points=10)
    outputs = {"pred_logits": torch.randn(1, 2, 3), "pred_masks": torch.full((1, 2, 4, 4), float("nan"))}
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 8)}]
    with pytest.raises(FloatingPointError):
        HungarianMatcher(1.0, 1.0, 1.0, num_points=8)(outputs, targets)
