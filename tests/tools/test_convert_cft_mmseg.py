"""``tools/convert_cft_mmseg.py`` on synthetic MMSeg checkpoints.

* Head: a checkpoint made from the reference manifests' ``decode_head.*`` names and shapes converts
  with no unmatched entry, drops only the loss buffer, and every entry lands on a ``sem_seg_head.*``
  entry of the model built from the matching config with the same shape (and no head entry is left
  missing); ``--standard-sign`` negates exactly the key half of the three ``kv.embed`` entries.
* Backbones: ResNetV1c-50 and MiT-B2 checkpoints with MMSeg names (generated here from the MMCV /
  MMSeg module structure) convert onto the Detectron2 DeepLab ResNet / ``D2MixVisionTransformer``
  exactly (no missing or mismatched entry); the MiT ``in_proj`` split and 1x1-kernel flattening
  keep the values; ``fc.*`` is dropped.
* Swin patch merging: the channel re-ordering turns MMSeg's unfold-based merging into the original
  concatenation-based one numerically.
* CLI: a full R50 segmentation checkpoint is written and loads into the model by exact names; an
  unknown entry makes the script list it, write nothing and exit 1; an unreadable input exits 2.
"""
import importlib.util
import json
import pickle
from typing import Dict

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, shared_path

_spec = importlib.util.spec_from_file_location("convert_cft_mmseg", REPO / "tools" / "convert_cft_mmseg.py")
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)

CONFIGS = {
    "cft_r50-d32_512x512_ade20k": str(REPO / "configs" / "cft" / "cft_r50-d32_512x512_ade20k.yaml"),
    "cft_mit-b2_512x512_ade20k": str(REPO / "configs" / "cft" / "cft_mit-b2_512x512_ade20k.yaml"),
}


def manifest_head(name: str) -> Dict[str, torch.Tensor]:
    manifest = json.loads(shared_path("reference", "cft", f"{name}.json").read_text())
    g = torch.Generator().manual_seed(0)
    return {
        f"decode_head.{k}": torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=g)
        for k, shape in manifest["state_dict"].items()
    }


def mmcv_resnet_v1c(depth: int = 50) -> Dict[str, torch.Tensor]:
    """ResNetV1c state dict in MMCV naming (deep stem, bottlenecks, plain conv shortcut)."""
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    sd: Dict[str, torch.Tensor] = {}

    def bn(prefix, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            sd[f"{prefix}.{k}"] = torch.rand(c)
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(3)

    for i, (cin, cout) in enumerate([(3, 32), (32, 32), (32, 64)]):
        sd[f"stem.{3 * i}.weight"] = torch.randn(cout, cin, 3, 3)
        bn(f"stem.{3 * i + 1}", cout)
    cin = 64
    for layer, n in enumerate(blocks, start=1):
        planes = 64 * 2 ** (layer - 1)
        for b in range(n):
            p = f"layer{layer}.{b}"
            sd[f"{p}.conv1.weight"] = torch.randn(planes, cin, 1, 1)
            bn(f"{p}.bn1", planes)
            sd[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            sd[f"{p}.conv3.weight"] = torch.randn(planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                sd[f"{p}.downsample.0.weight"] = torch.randn(planes * 4, cin, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            cin = planes * 4
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return sd


def mmseg_mit(embed=64, layers=(3, 4, 6, 3), heads=(1, 2, 5, 8), sr=(8, 4, 2, 1)) -> Dict[str, torch.Tensor]:
    """MixVisionTransformer state dict in MMSeg naming."""
    sd: Dict[str, torch.Tensor] = {}
    prev = 3
    for i, (n, h, r) in enumerate(zip(layers, heads, sr)):
        c, k = embed * h, 7 if i == 0 else 3
        sd[f"layers.{i}.0.projection.weight"] = torch.randn(c, prev, k, k)
        sd[f"layers.{i}.0.projection.bias"] = torch.randn(c)
        sd[f"layers.{i}.0.norm.weight"], sd[f"layers.{i}.0.norm.bias"] = torch.randn(c), torch.randn(c)
        for j in range(n):
            p = f"layers.{i}.1.{j}"
            for norm in ("norm1", "norm2"):
                sd[f"{p}.{norm}.weight"], sd[f"{p}.{norm}.bias"] = torch.randn(c), torch.randn(c)
            sd[f"{p}.attn.attn.in_proj_weight"] = torch.randn(3 * c, c)
            sd[f"{p}.attn.attn.in_proj_bias"] = torch.randn(3 * c)
            sd[f"{p}.attn.attn.out_proj.weight"] = torch.randn(c, c)
            sd[f"{p}.attn.attn.out_proj.bias"] = torch.randn(c)
            if r > 1:
                sd[f"{p}.attn.sr.weight"], sd[f"{p}.attn.sr.bias"] = torch.randn(c, c, r, r), torch.randn(c)
                sd[f"{p}.attn.norm.weight"], sd[f"{p}.attn.norm.bias"] = torch.randn(c), torch.randn(c)
            sd[f"{p}.ffn.layers.0.weight"], sd[f"{p}.ffn.layers.0.bias"] = torch.randn(4 * c, c, 1, 1), torch.randn(4 * c)
            sd[f"{p}.ffn.layers.1.weight"], sd[f"{p}.ffn.layers.1.bias"] = torch.randn(4 * c, 1, 3, 3), torch.randn(4 * c)
            sd[f"{p}.ffn.layers.4.weight"], sd[f"{p}.ffn.layers.4.bias"] = torch.randn(c, 4 * c, 1, 1), torch.randn(c)
        sd[f"layers.{i}.2.weight"], sd[f"layers.{i}.2.bias"] = torch.randn(c), torch.randn(c)
        prev = c
    return sd


_EXPECTED: Dict[str, Dict] = {}


def expected(name: str) -> Dict[str, torch.Size]:
    if name not in _EXPECTED:
        _EXPECTED[name] = conv.expected_shapes(CONFIGS[name])
    return _EXPECTED[name]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_manifest_head_lands_on_our_head(name):
    sd = manifest_head(name)
    out, report = conv.convert(sd)
    assert report["unmatched"] == []
    assert report["dropped"] == ["decode_head.loss_decode.1.criterion.empty_weight"]
    assert len(out) == len(sd) - 1
    problems = conv.check(out, expected(name), partial=False)
    assert problems["mismatched"] == []
    assert [m for m in problems["missing"] if m.startswith("sem_seg_head.")] == []
    for k, v in out.items():
        assert torch.equal(v, sd["decode_head." + k[len("sem_seg_head."):]])


def test_standard_sign_negates_key_rows_only():
    sd = manifest_head("cft_r50-d32_512x512_ade20k")
    plain, _ = conv.convert(sd)
    out, report = conv.convert(sd, standard_sign=True)
    assert sorted(report["negated"]) == [
        f"sem_seg_head.cfts.{i}.cross_attn.kv.embed.{p}" for i in range(3) for p in ("bias", "weight")
    ]
    for k in out:
        if k in report["negated"]:
            torch.testing.assert_close(out[k][:256], -plain[k][:256])
            torch.testing.assert_close(out[k][256:], plain[k][256:])
        else:
            assert torch.equal(out[k], plain[k])


def test_resnet_v1c_imagenet_file_converts_exactly():
    sd = mmcv_resnet_v1c(50)
    out, report = conv.convert(sd)
    assert report["backbone"] == "resnet_v1c" and report["unmatched"] == []
    assert sorted(report["dropped"]) == ["fc.bias", "fc.weight"]
    assert conv.check(out, expected("cft_r50-d32_512x512_ade20k"), partial=True) == {"mismatched": [], "missing": []}
    assert torch.equal(out["backbone.stem.conv2.weight"], sd["stem.3.weight"])
    assert torch.equal(out["backbone.stem.conv3.norm.running_var"], sd["stem.7.running_var"])
    assert torch.equal(out["backbone.res5.0.shortcut.norm.bias"], sd["layer4.0.downsample.1.bias"])
    assert torch.equal(out["backbone.res3.2.conv2.norm.weight"], sd["layer2.2.bn2.weight"])


def test_mit_b2_converts_exactly_and_keeps_values():
    sd = mmseg_mit()
    out, report = conv.convert(sd)
    assert report["backbone"] == "mit" and report["unmatched"] == [] and report["dropped"] == []
    assert conv.check(out, expected("cft_mit-b2_512x512_ade20k"), partial=True) == {"mismatched": [], "missing": []}
    w = sd["layers.2.1.4.attn.attn.in_proj_weight"]
    assert torch.equal(out["backbone.block3.4.attn.q.weight"], w[:320])
    assert torch.equal(out["backbone.block3.4.attn.kv.weight"], w[320:])
    assert torch.equal(out["backbone.block1.0.mlp.fc2.weight"], sd["layers.0.1.0.ffn.layers.4.weight"][:, :, 0, 0])
    assert torch.equal(out["backbone.norm4.weight"], sd["layers.3.2.weight"])
    assert torch.equal(out["backbone.patch_embed2.proj.weight"], sd["layers.1.0.projection.weight"])


def test_swin_patch_merging_reordering():
    """MMSeg merges with nn.Unfold(2, stride 2) (channel c * 4 + g, g over (0,0), (0,1), (1,0), (1,1));
    the original concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]."""
    torch.manual_seed(0)
    c, h, w = 3, 4, 6
    x = torch.randn(1, c, h, w)
    weight, gamma, beta = torch.randn(2 * c, 4 * c), torch.randn(4 * c), torch.randn(4 * c)
    unfolded = F.unfold(x, 2, stride=2).transpose(1, 2)  # (1, L, 4C)
    mmseg = F.linear(F.layer_norm(unfolded, (4 * c,), gamma, beta), weight)
    hw = x.permute(0, 2, 3, 1)  # (1, H, W, C)
    cat = torch.cat([hw[:, 0::2, 0::2], hw[:, 1::2, 0::2], hw[:, 0::2, 1::2], hw[:, 1::2, 1::2]], -1).reshape(1, -1, 4 * c)
    (_, w2), = conv.rename_swin("stages.0.downsample.reduction.weight", weight)
    (_, g2), = conv.rename_swin("stages.0.downsample.norm.weight", gamma)
    (_, b2), = conv.rename_swin("stages.0.downsample.norm.bias", beta)
    original = F.linear(F.layer_norm(cat, (4 * c,), g2, b2), w2)
    torch.testing.assert_close(original, mmseg)
    names = [conv.rename_swin(k, torch.zeros(1))[0][0] for k in (
        "patch_embed.projection.weight",
        "stages.1.blocks.0.attn.w_msa.relative_position_bias_table",
        "stages.2.blocks.3.ffn.layers.0.0.weight",
        "stages.2.blocks.3.ffn.layers.1.bias",
        "stages.0.blocks.1.norm2.weight",
        "norm3.bias",
    )]
    assert names == [
        "patch_embed.proj.weight",
        "layers.1.blocks.0.attn.relative_position_bias_table",
        "layers.2.blocks.3.mlp.fc1.weight",
        "layers.2.blocks.3.mlp.fc2.bias",
        "layers.0.blocks.1.norm2.weight",
        "norm3.bias",
    ]


def test_cli_full_checkpoint_loads_by_exact_names(tmp_path, capsys):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from segcommon.engine.defaults import setup_cfg

    backbone = {f"backbone.{k}": v for k, v in mmcv_resnet_v1c(50).items() if not k.startswith("fc.")}
    src, dst = tmp_path / "cft_r50.pth", tmp_path / "cft_r50.pkl"
    torch.save({"meta": {}, "state_dict": {**backbone, **manifest_head("cft_r50-d32_512x512_ade20k")}}, src)
    assert conv.main([str(src), str(dst), "--config-file", CONFIGS["cft_r50-d32_512x512_ade20k"]]) == 0
    data = pickle.loads(dst.read_bytes())
    assert data["matching_heuristics"] is False
    cfg = setup_cfg(
        CONFIGS["cft_r50-d32_512x512_ade20k"],
        ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN"],
        check_datasets=False,
    )
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(dst))
    sd = model.state_dict()  # every converted entry was loaded, and nothing is left unset
    for k, v in data["model"].items():
        assert torch.equal(sd[k], torch.as_tensor(v)), k
    missing = [k for k in sd if k not in data["model"] and not k.startswith("pixel_")]
    assert missing == []


def test_cli_refuses_unknown_entries(tmp_path, capsys):
    sd = manifest_head("cft_r50-d32_512x512_ade20k")
    sd["auxiliary_head.conv_seg.weight"] = torch.zeros(150, 256, 1, 1)
    sd["decode_head.mystery.weight"] = torch.zeros(3)
    src, dst = tmp_path / "bad.pth", tmp_path / "bad.pkl"
    torch.save({"state_dict": sd}, src)
    assert conv.main([str(src), str(dst)]) == 1
    err = capsys.readouterr().err
    assert "2 unmatched entries" in err and "auxiliary_head.conv_seg.weight" in err and "decode_head.mystery.weight" in err
    assert not dst.exists()
    assert conv.main([str(tmp_path / "absent.pth"), str(dst)]) == 2
