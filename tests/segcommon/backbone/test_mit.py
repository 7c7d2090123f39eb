"""The shared Mix Transformer backbone (``segcommon/backbone/mit.py``).

* ``D2MixVisionTransformer`` is in ``BACKBONE_REGISTRY`` and, built from the CFT MiT configs, has the
  parameter counts of the reference encoders (MiT-B2 24,196,288; MiT-B5 81,443,008; cft.md 2.10).
* Forward: names, channels and strides (rounded up) on an image size no stride divides.
* The efficient self-attention against a direct formula (spatial reduction conv + LayerNorm on the
  keys/values, per-head softmax(q k^T / sqrt(d)) v, output projection).
* A block with zero drop-path equals ``x + attn(LN1 x)`` then ``+ mlp(LN2 x)`` with the Mix-FFN written
  out (fc1, depth-wise 3x3, exact GELU, fc2).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

from conftest import REPO
from segcommon.backbone.mit import D2MixVisionTransformer, EfficientSelfAttention, MiTBlock
from segcommon.engine.defaults import setup_cfg


def _cfg(config: str, *opts):
    return setup_cfg(str(REPO / "configs" / "cft" / config), ["MODEL.DEVICE", "cpu", *opts], check_datasets=False)


@pytest.mark.parametrize(
    "config, count",
    [("cft_mit-b2_512x512_ade20k.yaml", 24_196_288), ("cft_mit-b5_640x640_ade20k.yaml", 81_443_008)],
)
def test_parameter_counts(config, count):
    assert BACKBONE_REGISTRY.get("D2MixVisionTransformer") is D2MixVisionTransformer
    with torch.device("meta"):
        backbone = build_backbone(_cfg(config))
    assert isinstance(backbone, D2MixVisionTransformer)
    assert sum(p.numel() for p in backbone.parameters()) == count


def test_forward_shapes_b0():
    cfg = _cfg("cft_mit-b2_512x512_ade20k.yaml", "MODEL.MIT.EMBED_DIMS", "32", "MODEL.MIT.NUM_LAYERS", "[1, 1, 1, 1]")
    backbone = D2MixVisionTransformer(cfg, ShapeSpec(channels=3)).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 70, 45))
    shape = backbone.output_shape()
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, stride, channels in zip(out, (4, 8, 16, 32), (32, 64, 160, 256)):
        assert shape[name].stride == stride and shape[name].channels == channels
        assert tuple(out[name].shape) == (1, channels, math.ceil(70 / stride), math.ceil(45 / stride))


@pytest.mark.parametrize("sr", [1, 2])
def test_efficient_attention_matches_formula(sr):
    torch.manual_seed(0)
    c, heads, h, w = 8, 2, 4, 6
    attn = EfficientSelfAttention(c, heads, True, 0.0, 0.0, sr, 1e-6).eval()
    x = torch.randn(2, h * w, c)
    with torch.no_grad():
        out = attn(x, h, w)
        kv_in = x
        if sr > 1:
            red = F.conv2d(x.transpose(1, 2).reshape(2, c, h, w), attn.sr.weight, attn.sr.bias, stride=sr)
            kv_in = F.layer_norm(red.flatten(2).transpose(1, 2), (c,), attn.norm.weight, attn.norm.bias, 1e-6)
        q = x @ attn.q.weight.T + attn.q.bias
        kv = kv_in @ attn.kv.weight.T + attn.kv.bias
        k, v = kv[..., :c], kv[..., c:]
        d = c // heads
        parts = []
        for t in range(heads):
            s = slice(t * d, (t + 1) * d)
            a = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d), dim=-1)
            parts.append(a @ v[..., s])
        expected = torch.cat(parts, -1) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_block_residual_structure():
    torch.manual_seed(0)
    c, h, w = 8, 3, 5
    block = MiTBlock(c, 2, 4, True, 0.0, 0.0, 0.0, 1, 1e-6).eval()
    x = torch.randn(1, h * w, c)
    with torch.no_grad():
        y = x + block.attn(F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, 1e-6), h, w)
        z = F.layer_norm(y, (c,), block.norm2.weight, block.norm2.bias, 1e-6) @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
        z = F.conv2d(z.transpose(1, 2).reshape(1, 4 * c, h, w), block.mlp.dwconv.dwconv.weight,
                     block.mlp.dwconv.dwconv.bias, padding=1, groups=4 * c)
        z = F.gelu(z.flatten(2).transpose(1, 2)) @ block.mlp.fc2.weight.T + block.mlp.fc2.bias
        torch.testing.assert_close(block(x, h, w), y + z, rtol=1e-5, atol=1e-5)
