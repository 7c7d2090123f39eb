"""The twin transformer: identity at initialisation, shapes, and the width duplication's effect."""
import pytest
import torch

from sotr.modeling.twin_transformer import TwinTransformer


@pytest.mark.parametrize("duplicate_width", [True, False])
def test_fresh_transformer_is_identity(duplicate_width):
    torch.manual_seed(0)
    model = TwinTransformer(dim=32, depth=2, heads=4, duplicate_width=duplicate_width)
    x = torch.randn(2, 32, 5, 7)
    assert torch.equal(model(x), x)


def test_full_size_transformer_is_identity_and_has_official_size():
    model = TwinTransformer()  # 256 wide, 12 layers, 8 heads
    assert sum(p.numel() for p in model.parameters()) == 34_621_488
    x = torch.randn(1, 256, 3, 4)
    with torch.no_grad():
        assert torch.equal(model(x), x)


def test_gates_are_zero_dim_and_zero():
    model = TwinTransformer(dim=16, depth=3, heads=2)
    gates = {k: v for k, v in model.named_parameters() if k.endswith(".g")}
    assert len(gates) == 3 * 4
    assert all(v.dim() == 0 and v.item() == 0 for v in gates.values())


def test_width_duplication_changes_the_output_once_gates_open():
    torch.manual_seed(0)
    dup = TwinTransformer(dim=16, depth=1, heads=2, duplicate_width=True)
    plain = TwinTransformer(dim=16, depth=1, heads=2, duplicate_width=False)
    with torch.no_grad():
        for p in dup.parameters():
            if p.dim() == 0:
                p.fill_(0.5)
    plain.load_state_dict(dup.state_dict())
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        a, b = dup(x), plain(x)
    assert a.shape == b.shape == x.shape
    # At the seam the convs see the other copy instead of zero padding.
    assert (a - b).abs().max() > 1e-3
