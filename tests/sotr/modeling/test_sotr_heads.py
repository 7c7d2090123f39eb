"""Instance head and mask branch: shapes at the spec's 800x1088 canvas (§2), names and init."""
import torch

from sotr.modeling.heads import MaskHead, TwinTransformerHead, split_feats


def test_shapes_on_an_800x1088_canvas():
    torch.manual_seed(0)
    n, c = 1, 256
    p = {2: (200, 272), 3: (100, 136), 4: (50, 68), 5: (25, 34), 6: (13, 17)}
    feats = {k: torch.randn(n, c, *hw) for k, hw in p.items()}
    head = TwinTransformerHead(
        in_channels=c, num_classes=80, num_kernels=256, num_grids=[40, 36, 24, 16, 12], prior_prob=0.01, num_layers=1
    )
    with torch.no_grad():
        cate, kernels, p5 = head(split_feats([feats[k] for k in (2, 3, 4, 5, 6)]))
        mask = MaskHead(num_levels=4, in_channels=256, channels=128, num_masks=256, norm="GN")(
            [feats[2], feats[3], feats[4], p5])
    assert [x.shape[-1] for x in cate] == [40, 36, 24, 16, 12]
    assert sum(x.shape[-1] ** 2 for x in cate) == 3872
    assert cate[0].shape == (1, 80, 40, 40) and kernels[4].shape == (1, 256, 12, 12)
    assert p5.shape == (1, 256, 25, 34)
    assert mask.shape == (1, 256, 200, 272)
    torch.testing.assert_close(head.cate_pred.bias, torch.full((80,), -4.59512), atol=1e-5, rtol=0)


def test_mask_head_structure_and_init():
    head = MaskHead(num_levels=4, in_channels=256, channels=128, num_masks=256, norm="GN")
    names = [k for k, _ in head.named_parameters()]
    assert "mask_head" not in names[0]
    assert [len([m for m in t if isinstance(m, torch.nn.Sequential)]) for t in head.convs_all_levels] == [1, 1, 2, 3]
    assert sum(p.numel() for p in head.convs_all_levels.parameters()) == 1_623_808
    assert sum(p.numel() for p in head.conv_pred.parameters()) == 33_280
    w = torch.cat([m.weight.flatten() for m in head.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(w.std().item() - 0.01) < 1e-3
    no_norm = MaskHead(num_levels=4, in_channels=256, channels=128, num_masks=256, norm="none")
    assert no_norm.convs_all_levels[0].conv0[0].bias is not None
    assert isinstance(no_norm.conv_pred[1], torch.nn.GroupNorm) and no_norm.conv_pred[0].bias is not None
