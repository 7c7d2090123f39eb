"""Quadtree node selection, training-time sampling, write-back and the demo blur
(``shared/specs/transfiner.md`` §7, §11, §12, §16)."""
import torch
import torch.nn.functional as F

from transfiner.modeling.quadtree import (
    binomial_blur,
    gather_level_nodes,
    sample_training_nodes,
    select_nodes,
    write_back,
)

SIZES = (28, 56, 112)


def test_transfiner_selection_is_a_quadtree():
    torch.manual_seed(0)
    inc = torch.rand(3, 1, 28, 28)
    sel = select_nodes(inc, SIZES, (0.125, 0.5, 0.5))
    assert [s.shape for s in sel] == [(3, 28, 28), (3, 56, 56), (3, 112, 112)]
    # Non-decreasing thresholds: every selected child has a selected parent.
    for parent, child in zip(sel, sel[1:]):
        up = F.interpolate(parent[:, None].float(), scale_factor=2, mode="nearest")[:, 0].bool()
        assert (child <= up).all()
    # The 56 level is the nearest upsampling of the 28 map thresholded at 0.5.
    assert torch.equal(sel[1], (inc[:, 0] >= 0.5).repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_transfiner_demo_dilation_grows_the_last_level_only():
    inc = torch.zeros(1, 1, 28, 28)
    inc[0, 0, 10, 10] = 0.9
    plain = select_nodes(inc, SIZES, (1e-6, 0.125, 0.8))
    dilated = select_nodes(inc, SIZES, (1e-6, 0.125, 0.8), dilation_kernel=3)
    assert plain[2].sum() == 16 and dilated[2].sum() == 36
    assert torch.equal(plain[1], dilated[1])


def level(counts, channels=4):
    sel = torch.zeros(len(counts), 28, 28, dtype=torch.bool)
    for i, c in enumerate(counts):
        sel[i].view(-1)[:c] = True
    feats = torch.randn(len(counts), channels, 28, 28)
    return gather_level_nodes(sel, feats, torch.rand(len(counts), 28, 28), torch.randn(8, 28, 28),
                              labels=torch.rand(len(counts), 28, 28))


def test_transfiner_training_sampling_invalid_tiled_and_without_replacement():
    torch.manual_seed(0)
    levels = [level([200, 5, 40]), level([300, 50, 12]), level([160, 60, 160])]
    valid, picks = sample_training_nodes(levels, 3, num_samples=150, tile=15, min_nodes=10)
    assert valid == [0, 2]  # RoI 1 has 5 < 10 nodes on the first level
    for i, per_level in zip(valid, picks):
        for lvl, p in zip(levels, per_level):
            assert p.shape == (150,)
            assert (lvl.roi[p] == i).all()
    # RoI 0, first level: 200 >= 150 nodes, sampled without replacement.
    assert len(set(picks[0][0].tolist())) == 150
    # RoI 2, first level: 40 nodes, a permutation tiled cyclically.
    p = picks[1][0]
    assert torch.equal(p[:40], p[40:80]) and len(set(p.tolist())) == 40


def test_transfiner_write_back_levels():
    coarse = torch.full((2, 1, 28, 28), 0.3)
    sel28 = torch.zeros(2, 28, 28, dtype=torch.bool)
    sel28[0, 0, 0] = True
    sel56 = torch.zeros(2, 56, 56, dtype=torch.bool)
    sel112 = torch.zeros(2, 112, 112, dtype=torch.bool)
    sel112[1, 5, 7] = True
    out = write_back(coarse, [sel28, sel56, sel112], [torch.tensor([0.9]), torch.zeros(0), torch.tensor([0.1])], SIZES)
    # The 56 stage is skipped (no nodes), the 28 map goes straight to 112 with align_corners=True.
    r = coarse.clone()
    r[0, 0, 0, 0] = 0.9
    expected = F.interpolate(r, (112, 112), mode="bilinear", align_corners=True)
    expected[1, 0, 5, 7] = 0.1
    assert torch.allclose(out, expected)


def test_transfiner_binomial_blur():
    x = torch.ones(1, 1, 9, 9)
    y = binomial_blur(x, 7)
    assert torch.allclose(y[0, 0, 4, 4], torch.tensor(1.0))  # normalised kernel
    assert y[0, 0, 0, 0] < 1  # zero padding lowers the border
    k = torch.tensor([1.0, 6, 15, 20, 15, 6, 1]) / 64
    assert torch.allclose(y[0, 0, 0, 4], k[3:].sum() * 1.0)
