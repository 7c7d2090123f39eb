"""Pixel decoders built from the official R50 COCO instance config: state-dict keys/shapes equal the
reference manifest (official checkpoints load), output shapes follow the forward_features contract,
and the registry/builder errors (spec 4)."""
import json

import pytest
import torch
from detectron2.modeling import build_backbone
from torch import nn

from conftest import REPO, shared_path
from mask2former.modeling.pixel_decoder import (
    PIXEL_DECODER_REGISTRY,
    BasePixelDecoder,
    MSDeformAttnPixelDecoder,
    build_pixel_decoder,
)
from mask2former.modeling.pixel_decoder.msdeformattn import MSDeformAttnTransformerEncoder
from segcommon.engine import setup_cfg

CONFIG = REPO / "configs" / "mask2former" / "coco" / "instance-segmentation" / "maskformer2_R50_bs16_50ep.yaml"
MANIFEST = "coco__instance-segmentation__maskformer2_R50_bs16_50ep.json"
PREFIX = "sem_seg_head.pixel_decoder."
IMAGE_H, IMAGE_W = 64, 96


@pytest.fixture(scope="module")
def cfg():
    return setup_cfg(str(CONFIG), ["MODEL.DEVICE", "cpu"], check_datasets=False, freeze=False)


@pytest.fixture(scope="module")
def input_shape(cfg):
    return build_backbone(cfg).output_shape()


@pytest.fixture(scope="module")
def features(input_shape):
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(2, s.channels, IMAGE_H // s.stride, IMAGE_W // s.stride, generator=g)
        for k, s in input_shape.items()
    }


def with_opts(cfg, **head_opts):
    c = cfg.clone()
    for k, v in head_opts.items():
        setattr(c.MODEL.SEM_SEG_HEAD, k, v)  # new keys are allowed: the clone is not frozen
    return c


def check_contract(out, mask_dim=256, conv_dim=256, batch=2):
    mask_features, extra, multi_scale = out
    assert mask_features.shape == (batch, mask_dim, IMAGE_H // 4, IMAGE_W // 4)
    assert extra is None
    assert isinstance(multi_scale, list) and len(multi_scale) == 3
    assert [tuple(x.shape) for x in multi_scale] == [
        (batch, conv_dim, IMAGE_H // s, IMAGE_W // s) for s in (32, 16, 8)
    ]
    for t in [mask_features, *multi_scale]:
        assert t.dtype == torch.float32 and torch.isfinite(t).all()


def test_msdeformattn_keys_match_official_manifest(cfg, input_shape):
    with open(shared_path("reference", "mask2former", MANIFEST)) as f:
        manifest = json.load(f)
    expected = {k[len(PREFIX):]: v for k, v in manifest["state_dict"].items() if k.startswith(PREFIX)}
    decoder = build_pixel_decoder(cfg, input_shape)
    assert isinstance(decoder, MSDeformAttnPixelDecoder)
    mine = {k: list(v.shape) for k, v in decoder.state_dict().items()}
    assert sorted(set(expected) - set(mine)) == [] and sorted(set(mine) - set(expected)) == []
    assert mine == expected
    assert list(mine) == list(expected)  # same order too
    assert sum(p.numel() for p in decoder.parameters()) == manifest["num_params_by_module"][PREFIX[:-1]]


def test_msdeformattn_forward_shapes_and_gradients(cfg, input_shape, features):
    decoder = build_pixel_decoder(cfg, input_shape)
    out = decoder.forward_features(features)
    check_contract(out)
    # Everything, deformable-attention offsets included, receives a gradient. The exception is
    # level_embed: positions reach the output only through the offset / attention-weight matrices,
    # which the reference initialises to zero, so its gradient is exactly 0 at init.
    (out[0].mean() + sum(x.mean() for x in out[2])).backward()
    grads = {n: p.grad for n, p in decoder.named_parameters()}
    assert [n for n, g in grads.items() if g is None] == []
    assert [n for n, g in grads.items() if not g.abs().sum() > 0] == ["transformer.level_embed"]


def test_msdeformattn_levels_and_ffn_from_config(cfg, input_shape, features):
    """Encoder levels follow DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES (FPN levels fill the rest);
    the FFN width follows a DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD key when the config has one."""
    c = with_opts(
        cfg,
        DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES=["res4", "res5"],
        TRANSFORMER_ENC_LAYERS=1,
        DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD=64,
    )
    decoder = build_pixel_decoder(c, input_shape)
    sd = decoder.state_dict()
    assert sd["transformer.level_embed"].shape == (2, 256)
    assert sd["transformer.encoder.layers.0.linear1.weight"].shape == (64, 256)
    assert sd["transformer.encoder.layers.0.self_attn.sampling_offsets.weight"].shape == (8 * 2 * 4 * 2, 256)
    assert len(decoder.input_proj) == 2 and "transformer.encoder.layers.1.norm1.weight" not in sd
    assert {k.split(".")[0] for k in sd if k.startswith(("adapter_", "layer_"))} == {
        "adapter_1", "adapter_2", "layer_1", "layer_2"
    }
    check_contract(decoder.forward_features(features))
    # Without the key, the reference's hard-coded width.
    decoder = build_pixel_decoder(with_opts(cfg, TRANSFORMER_ENC_LAYERS=1), input_shape)
    assert decoder.transformer.encoder.layers[0].linear1.out_features == 1024


def test_reference_points_are_pixel_centres():
    ref = MSDeformAttnTransformerEncoder.get_reference_points([(2, 3), (1, 1)], batch_size=2, device="cpu")
    assert ref.shape == (2, 7, 2, 2)
    expected = torch.tensor(
        [[1 / 6, 1 / 4], [3 / 6, 1 / 4], [5 / 6, 1 / 4], [1 / 6, 3 / 4], [3 / 6, 3 / 4], [5 / 6, 3 / 4], [0.5, 0.5]]
    )
    torch.testing.assert_close(ref[1, :, 1], expected)
    torch.testing.assert_close(ref[:, :, 0], ref[:, :, 1])


def test_base_pixel_decoder(cfg, input_shape, features):
    decoder = build_pixel_decoder(with_opts(cfg, PIXEL_DECODER_NAME="BasePixelDecoder"), input_shape)
    assert isinstance(decoder, BasePixelDecoder)
    shapes = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    expected = {"mask_features.weight": (256, 256, 3, 3), "mask_features.bias": (256,)}
    for i, c in enumerate([256, 512, 1024, 2048], start=1):
        if i < 4:
            expected.update({f"adapter_{i}.weight": (256, c, 1, 1), f"adapter_{i}.norm.weight": (256,),
                             f"adapter_{i}.norm.bias": (256,)})
        expected.update({f"layer_{i}.weight": (256, 2048 if i == 4 else 256, 3, 3),
                         f"layer_{i}.norm.weight": (256,), f"layer_{i}.norm.bias": (256,)})
    assert shapes == expected
    check_contract(decoder.forward_features(features))


class _NoForwardFeaturesForTest(nn.Module):
    def __init__(self, cfg, input_shape):
        super().__init__()


if "_NoForwardFeaturesForTest" not in PIXEL_DECODER_REGISTRY:  # the registry refuses duplicates
    PIXEL_DECODER_REGISTRY.register(_NoForwardFeaturesForTest)


def test_builder_errors(cfg, input_shape):
    with pytest.raises(KeyError, match="PIXEL_DECODER_NAME"):
        build_pixel_decoder(with_opts(cfg, PIXEL_DECODER_NAME="NoSuchDecoder"), input_shape)
    with pytest.raises(ValueError, match="forward_features"):
        build_pixel_decoder(with_opts(cfg, PIXEL_DECODER_NAME="_NoForwardFeaturesForTest"), input_shape)
