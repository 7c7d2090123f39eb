"""Sine positional encoding (spec 4.3): golden values, the formula written out, and masking."""
import json
import math

import pytest
import torch

from conftest import shared_path
from mask2former.modeling.position_encoding import PositionEmbeddingSine


def test_golden_position_embedding_sine():
    with open(shared_path("reference", "mask2former", "golden_small.json")) as f:
        case = json.load(f)["position_embedding_sine"]
    pe = PositionEmbeddingSine(case["num_pos_feats"], case["temperature"], case["normalize"], case["scale"])
    out = pe(torch.randn(case["input_shape"]))
    expected = torch.tensor(case["output"])
    assert out.dtype == torch.float32 and out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_formula_and_shape():
    F, h, w = 6, 3, 4
    out = PositionEmbeddingSine(F, normalize=True)(torch.zeros(2, 7, h, w, dtype=torch.float16))
    assert out.shape == (2, 2 * F, h, w) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], out[1])  # same for every image
    for i in range(h):
        for j in range(w):
            ay = (i + 1) / (h + 1e-6) * 2 * math.pi
            ax = (j + 1) / (w + 1e-6) * 2 * math.pi
            for k in range(F):
                dim_t = 10000 ** (2 * (k // 2) / F)
                fn = math.sin if k % 2 == 0 else math.cos
                assert out[0, k, i, j].item() == pytest.approx(fn(ay / dim_t), abs=1e-5)
                assert out[0, F + k, i, j].item() == pytest.approx(fn(ax / dim_t), abs=1e-5)


def test_mask_excludes_padding():
    """With normalize=True the valid part of a padded map is encoded as the unpadded map would be."""
    pe = PositionEmbeddingSine(8, normalize=True)
    mask = torch.zeros(1, 5, 6, dtype=torch.bool)
    mask[:, 3:, :] = True
    mask[:, :, 4:] = True
    padded = pe(torch.zeros(1, 1, 5, 6), mask)
    plain = pe(torch.zeros(1, 1, 3, 4))
    torch.testing.assert_close(padded[:, :, :3, :4], plain)


def test_unnormalized_positions_and_scale_check():
    out = PositionEmbeddingSine(2)(torch.zeros(1, 1, 2, 3))
    # Channel 0 is sin(y_embed) with y_embed = row + 1; channel 2 sin(x_embed).
    torch.testing.assert_close(out[0, 0, :, 0], torch.sin(torch.tensor([1.0, 2.0])))
    torch.testing.assert_close(out[0, 2, 0, :], torch.sin(torch.tensor([1.0, 2.0, 3.0])))
    with pytest.raises(ValueError, match="normalize"):
        PositionEmbeddingSine(4, normalize=False, scale=1.0)
    with pytest.raises(ValueError, match="even"):
        PositionEmbeddingSine(3)
