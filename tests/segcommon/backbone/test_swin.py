"""The shared Swin Transformer (``segcommon/backbone/swin.py``), its Detectron2 adapters
(``segcommon/backbone/d2_swin.py``) and ``tools/convert_swin_to_d2.py``.

* Every official Mask2Former Swin config builds, through ``build_backbone``, a ``D2SwinTransformer``
  whose state dict has exactly the reference manifest's ``backbone.*`` keys, order, shapes and buffers,
  and the reference backbone parameter count (Swin-T/S/B/L, window 7 and 12, 224 and 384).
* The official Transfiner Swin-T / Swin-B configs build FPN backbones equal to the reference
  manifests' ``backbone.*`` entries (Swin-B from the official helper's defaults, see ``d2_swin.py``).
* Forward: output names, strides and channels on an image of a size no stride divides.
* The window helpers, the relative position index and the shifted-window mask against their
  definitions; a block against a naive full-attention implementation of the same definition.
* The converter: a timm-style Swin-T checkpoint made from the manifest's names and shapes converts
  and loads into both adapters; a checkpoint with an unknown entry is refused with status 1.
"""
import importlib.util
import json
import pickle
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from torch import nn

from conftest import REPO, shared_path
from segcommon.backbone.d2_swin import (
    OFFICIAL_SWINB_SIZES,
    PROJECT_FREEZE_AT,
    PROJECT_SWINT_SIZES,
    D2SwinTransformer,
    TransfinerSwinTransformer,
)
from segcommon.backbone.swin import (
    SwinTransformer,
    SwinTransformerBlock,
    relative_position_index,
    shifted_window_attention_mask,
    window_partition,
    window_reverse,
)
from segcommon.engine import setup_cfg

M2F_CONFIGS = REPO / "configs" / "mask2former"
M2F_SWIN_CONFIGS = sorted(str(p.relative_to(M2F_CONFIGS)) for p in M2F_CONFIGS.rglob("swin/*.yaml"))
TRANSFINER_SWIN = {
    "mask_rcnn_swint_FPN_3x": "configs/transfiner/transfiner/mask_rcnn_swint_FPN_3x.yaml",
    "mask_rcnn_swinb_FPN_3x": "configs/transfiner/transfiner/mask_rcnn_swinb_FPN_3x.yaml",
}
SWIN_T_M2F = "coco/instance-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml"


def load_cfg(path, *opts):
    return setup_cfg(str(path), ["MODEL.DEVICE", "cpu", *opts], check_datasets=False)


_BACKBONES: Dict[Tuple, nn.Module] = {}


def m2f_backbone(rel_path: str) -> nn.Module:
    """The backbone of a Mask2Former config, built once per distinct MODEL.SWIN (Swin-L is 195 M)."""
    cfg = load_cfg(M2F_CONFIGS / rel_path)
    key = tuple(sorted((k, str(v)) for k, v in cfg.MODEL.SWIN.items()))
    if key not in _BACKBONES:
        _BACKBONES[key] = build_backbone(cfg)
    return _BACKBONES[key]


def backbone_entries(manifest: Dict) -> List[Tuple[str, List[int]]]:
    return [(k, v) for k, v in manifest["state_dict"].items() if k.startswith("backbone.")]


def entries(module: nn.Module, prefix: str = "backbone.") -> List[Tuple[str, List[int]]]:
    return [(prefix + k, list(v.shape)) for k, v in module.state_dict().items()]


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_importing_segcommon_backbone_registers_the_adapters():
    import segcommon.backbone  # noqa: F401
    from detectron2.modeling import BACKBONE_REGISTRY

    assert BACKBONE_REGISTRY.get("D2SwinTransformer") is D2SwinTransformer
    for kind in ("t", "b"):
        for name in (f"build_swin{kind}_backbone", f"build_swin{kind}_fpn_backbone"):
            assert BACKBONE_REGISTRY.get(name).__module__ == "segcommon.backbone.d2_swin"


# ----------------------------------------------------------------------------------------------------
# State dicts against the reference manifests


def test_every_swin_manifest_has_its_config():
    manifests = {p.stem for p in shared_path("reference", "mask2former").glob("*__swin__*.json")}
    assert len(manifests) == 31
    assert manifests <= {rel[: -len(".yaml")].replace("/", "__") for rel in M2F_SWIN_CONFIGS}


@pytest.mark.parametrize("rel_path", M2F_SWIN_CONFIGS)
def test_mask2former_swin_matches_manifest(rel_path):
    name = rel_path[: -len(".yaml")].replace("/", "__")
    path = shared_path("reference", "mask2former") / (name + ".json")
    if not path.exists():
        pytest.skip(f"{rel_path} is not an official config (no reference manifest)")
    manifest = json.loads(path.read_text())
    index = json.loads(shared_path("reference", "mask2former", "index.json").read_text())
    backbone = m2f_backbone(rel_path)

    assert isinstance(backbone, D2SwinTransformer)
    assert entries(backbone) == backbone_entries(manifest)  # names, order, shapes
    buffers = {"backbone." + k for k, _ in backbone.named_buffers()}
    assert buffers == {k for k in manifest["buffer_keys"] if k.startswith("backbone.")}
    assert num_params(backbone) == index[name]["backbone_params"] == manifest["num_params_by_module"]["backbone"]
    assert all(p.requires_grad for p in backbone.parameters())  # nothing frozen


@pytest.mark.parametrize("name", sorted(TRANSFINER_SWIN))
def test_transfiner_swin_fpn_matches_manifest(name):
    manifest = json.loads(shared_path("reference", "transfiner", name + ".json").read_text())
    cfg = load_cfg(REPO / TRANSFINER_SWIN[name])
    backbone = build_backbone(cfg)

    expected = backbone_entries(manifest)
    assert entries(backbone) == expected
    assert all(k.startswith(("backbone.fpn_", "backbone.bottom_up.")) for k, _ in expected)
    index_keys = [k for k, _ in expected if k.endswith("relative_position_index")]
    assert len(index_keys) == manifest["num_buffer_keys"]  # the Swin index is the only buffer
    assert {"backbone." + k for k, _ in backbone.named_buffers()} == set(index_keys)
    params = sum(torch.Size(s).numel() for k, s in expected if k not in index_keys)
    assert num_params(backbone) == params
    # The official helpers force FREEZE_AT -1: everything trains (num_params_trainable == num_params).
    assert manifest["num_params_trainable"] == manifest["num_params"]
    assert all(p.requires_grad for p in backbone.parameters())


def test_transfiner_swinb_sizes_come_from_the_official_helper_defaults():
    cfg = load_cfg(REPO / TRANSFINER_SWIN["mask_rcnn_swinb_FPN_3x"])
    # The YAML leaves the sizes (and FREEZE_AT) at the project defaults, i.e. Swin-T's ...
    assert cfg.MODEL.SWINT.EMBED_DIM == 96 and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.MODEL.BACKBONE.NAME == "build_swinb_fpn_backbone"
    # ... and the Swin-B builder substitutes the official swinb/config.py defaults.
    bottom_up = build_backbone(cfg).bottom_up
    assert isinstance(bottom_up, TransfinerSwinTransformer)
    assert bottom_up.embed_dim == 128
    assert [len(layer.blocks) for layer in bottom_up.layers] == [2, 2, 18, 2]
    assert [layer.blocks[0].attn.num_heads for layer in bottom_up.layers] == [4, 8, 16, 32]
    assert bottom_up.frozen_stages == -1


def test_transfiner_builders_keep_explicit_values():
    cfg = load_cfg(
        REPO / TRANSFINER_SWIN["mask_rcnn_swinb_FPN_3x"],
        "MODEL.SWINT.EMBED_DIM", "32", "MODEL.SWINT.DEPTHS", "[1, 1, 1, 1]",
        "MODEL.SWINT.NUM_HEADS", "[1, 2, 4, 8]", "MODEL.BACKBONE.FREEZE_AT", "3",
        "MODEL.SWINT.OUT_FEATURES", "['stage3', 'stage5']",
    )
    cfg.defrost()
    cfg.MODEL.BACKBONE.NAME = "build_swinb_backbone"  # without the FPN, which needs stage2..5
    swin = build_backbone(cfg)
    assert swin.embed_dim == 32 and [len(layer.blocks) for layer in swin.layers] == [1, 1, 1, 1]
    assert [layer.blocks[0].attn.num_heads for layer in swin.layers] == [1, 2, 4, 8]
    # Only the selected stages get an output norm (official swint/swinb behaviour).
    assert {k.split(".")[0] for k in swin.state_dict() if k.startswith("norm")} == {"norm1", "norm3"}
    assert list(swin.output_shape()) == ["stage3", "stage5"]
    # FREEZE_AT 3 freezes the patch embedding and stages 0 and 1.
    swin.train()
    assert not any(p.requires_grad for m in (swin.patch_embed, swin.layers[0], swin.layers[1]) for p in m.parameters())
    assert all(p.requires_grad for p in swin.layers[2].parameters())
    assert not swin.layers[1].training and swin.layers[2].training


def test_transfiner_project_defaults_are_the_registered_ones():
    from transfiner import add_transfiner_config

    cfg = get_cfg()
    add_transfiner_config(cfg)
    assert {k: cfg.MODEL.SWINT[k] for k in PROJECT_SWINT_SIZES} == PROJECT_SWINT_SIZES
    assert cfg.MODEL.BACKBONE.FREEZE_AT == PROJECT_FREEZE_AT
    assert OFFICIAL_SWINB_SIZES == {"EMBED_DIM": 128, "DEPTHS": [2, 2, 18, 2], "NUM_HEADS": [4, 8, 16, 32]}


# ----------------------------------------------------------------------------------------------------
# Forward


def test_d2_swin_forward_strides_and_channels():
    backbone = m2f_backbone(SWIN_T_M2F).eval()
    assert backbone.size_divisibility == 32
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (96, 4), "res3": (192, 8), "res4": (384, 16), "res5": (768, 32)
    }
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 100, 140))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, y in out.items():
        s = shapes[name].stride
        assert tuple(y.shape) == (1, shapes[name].channels, -(-100 // s), -(-140 // s)), name
        assert torch.isfinite(y).all()


def test_d2_swin_out_features_subset_keeps_all_norms():
    cfg = load_cfg(
        M2F_CONFIGS / SWIN_T_M2F, "MODEL.SWIN.OUT_FEATURES", "['res3', 'res5']", "MODEL.SWIN.DEPTHS", "[1, 1, 1, 1]"
    )
    backbone = build_backbone(cfg).eval()
    assert list(backbone.output_shape()) == ["res3", "res5"]
    assert all(f"norm{i}.weight" in backbone.state_dict() for i in range(4))
    with torch.no_grad():
        assert list(backbone(torch.randn(1, 3, 64, 64))) == ["res3", "res5"]


def test_transfiner_swin_forward():
    fpn = build_backbone(load_cfg(REPO / TRANSFINER_SWIN["mask_rcnn_swint_FPN_3x"])).eval()
    with torch.no_grad():
        stages = fpn.bottom_up(torch.randn(1, 3, 100, 140))
        pyramid = fpn(torch.randn(1, 3, 96, 128))  # the FPN needs sizes divisible by 32
    assert {k: tuple(v.shape) for k, v in stages.items()} == {
        "stage2": (1, 96, 25, 35), "stage3": (1, 192, 13, 18), "stage4": (1, 384, 7, 9), "stage5": (1, 768, 4, 5)
    }
    assert {k: tuple(v.shape) for k, v in pyramid.items()} == {
        "p2": (1, 256, 24, 32), "p3": (1, 256, 12, 16), "p4": (1, 256, 6, 8), "p5": (1, 256, 3, 4), "p6": (1, 256, 2, 2)
    }


# ----------------------------------------------------------------------------------------------------
# Window helpers, relative position index, shifted-window mask


def test_window_partition_reverse_round_trip():
    x = torch.randn(2, 12, 8, 5)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 3 * 2, 4, 4, 5)
    # Batch-major, row-major over the window grid, row-major inside a window.
    assert torch.equal(windows[0], x[0, :4, :4])
    assert torch.equal(windows[1], x[0, :4, 4:8])
    assert torch.equal(windows[2], x[0, 4:8, :4])
    assert torch.equal(windows[6], x[1, :4, :4])
    assert torch.equal(window_reverse(windows, 4, 12, 8), x)


def test_relative_position_index_definition():
    ws = 3
    index = relative_position_index((ws, ws))
    assert index.shape == (ws * ws, ws * ws) and index.dtype == torch.int64
    for i in range(ws * ws):
        for j in range(ws * ws):
            (yi, xi), (yj, xj) = divmod(i, ws), divmod(j, ws)
            assert index[i, j] == (yi - yj + ws - 1) * (2 * ws - 1) + (xi - xj + ws - 1)
    attn = SwinTransformerBlock(dim=8, num_heads=2, window_size=7).attn
    assert "relative_position_index" in attn.state_dict()  # persistent, as in the checkpoints
    assert attn.relative_position_bias_table.shape == (13 * 13, 2)


def test_shifted_window_mask_regions():
    ws, s = 4, 2
    mask = shifted_window_attention_mask(8, 12, ws, s)
    assert mask.shape == (2 * 3, ws * ws, ws * ws)
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    assert (mask[0] == 0).all() and (mask[1] == 0).all()  # windows away from the wrap-around seam
    # Last window row and column: 4 regions of 2x2 tokens, on the shifted canvas.
    labels = torch.tensor([[(r >= 2) * 2 + (c >= 2) for c in range(ws)] for r in range(ws)]).flatten()
    expected = torch.where(labels[:, None] == labels[None, :], 0.0, -100.0)
    assert torch.equal(mask[5], expected)
    assert torch.equal(shifted_window_attention_mask(8, 12, ws, s)[2], torch.where(
        (labels % 2)[:, None] == (labels % 2)[None, :], 0.0, -100.0))  # last column only: 2 regions


@pytest.mark.parametrize("shift", [0, 2])
def test_shifted_window_attention_blocks_cross_region_pairs(shift):
    """Direct check: in a block, token (0, 0) of an 8x8 map can only influence tokens of its own
    window on the shifted canvas, and with a shift only those that were its neighbours before the
    cyclic roll; e.g. (7, 7) shares its shifted window but not its region."""
    torch.manual_seed(0)
    blk = SwinTransformerBlock(dim=8, num_heads=2, window_size=4, shift_size=shift).eval()
    H = W = 8
    mask = shifted_window_attention_mask(H, W, 4, 2)
    x = torch.randn(1, H * W, 8)
    x2 = x.clone()
    x2[0, 0] += 5.0 * torch.randn(8)  # perturb token (0, 0) (not uniformly: LayerNorm would cancel it)
    with torch.no_grad():
        delta = (blk(x2, H, W, mask) - blk(x, H, W, mask)).abs().amax(-1).view(H, W)
    changed = {(r, c) for r in range(H) for c in range(W) if delta[r, c] > 1e-6}
    if shift:
        # Shifted window of (0, 0): original rows/cols {6, 7, 0, 1}; its region: rows/cols {0, 1}.
        expected = {(r, c) for r in (0, 1) for c in (0, 1)}
        assert delta[7, 7] < 1e-6 and delta[0, 7] < 1e-6 and delta[7, 0] < 1e-6
    else:
        expected = {(r, c) for r in range(4) for c in range(4)}
    assert changed == expected


def naive_block(blk: SwinTransformerBlock, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The block from its definition: full attention over the padded map, where token j is visible
    to token i only in the same window of the rolled canvas, with bias table[(dy + ws - 1)(2ws - 1) +
    dx + ws - 1] and -100 between the 9 shift regions; no window partitioning, no roll."""
    ws, s, attn = blk.window_size, blk.shift_size, blk.attn
    B, _, C = x.shape
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    padded = torch.zeros(B, Hp, Wp, C)
    padded[:, :H, :W] = blk.norm1(x).view(B, H, W, C)
    ys, xs = torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing="ij")
    ry, rx = ((ys - s) % Hp).flatten(), ((xs - s) % Wp).flatten()  # position on the rolled canvas
    window = (ry // ws) * (Wp // ws) + rx // ws
    iy, ix = ry % ws, rx % ws

    def region(r, n):
        return (r >= n - ws).long() + (r >= n - s).long() if s else torch.zeros_like(r)

    label = region(ry, Hp) * 3 + region(rx, Wp)
    heads = attn.num_heads
    q, k, v = attn.qkv(padded.view(B, Hp * Wp, C)).view(B, Hp * Wp, 3, heads, C // heads).unbind(2)
    logits = torch.einsum("bihd,bjhd->bhij", q * attn.scale, k)
    index = (iy[:, None] - iy[None, :] + ws - 1) * (2 * ws - 1) + (ix[:, None] - ix[None, :] + ws - 1)
    table = attn.relative_position_bias_table
    logits = logits + table[index.clamp(0, table.shape[0] - 1)].permute(2, 0, 1)
    logits = logits + torch.where(label[:, None] != label[None, :], -100.0, 0.0)
    logits = logits.masked_fill(window[:, None] != window[None, :], float("-inf"))
    out = torch.einsum("bhij,bjhd->bihd", logits.softmax(-1), v).reshape(B, Hp * Wp, C)
    out = attn.proj(out).view(B, Hp, Wp, C)[:, :H, :W].reshape(B, H * W, C)
    y = x + out
    return y + blk.mlp(blk.norm2(y))


@pytest.mark.parametrize("shift", [0, 2])
def test_block_matches_naive_definition_with_padding(shift):
    torch.manual_seed(1)
    blk = SwinTransformerBlock(dim=12, num_heads=3, window_size=4, shift_size=shift).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_()  # make a wrong index visible
        H, W = 10, 9  # padded to 12 x 12
        x = torch.randn(2, H * W, 12)
        mask = shifted_window_attention_mask(12, 12, 4, 2)
        torch.testing.assert_close(blk(x, H, W, mask), naive_block(blk, x, H, W), rtol=1e-5, atol=1e-5)


def test_patch_merging_order_and_odd_sizes():
    swin = SwinTransformer(embed_dim=4, depths=(1, 1), num_heads=(1, 1), window_size=2, out_indices=(1,))
    merge = swin.layers[0].downsample
    with torch.no_grad():
        merge.norm.weight.fill_(1)
        merge.norm.bias.zero_()
        x = torch.randn(1, 3 * 5, 4)
        y = merge(x, 3, 5)
        assert y.shape == (1, 2 * 3, 8)
        grid = torch.nn.functional.pad(x.view(1, 3, 5, 4), (0, 0, 0, 1, 0, 1))
        cat = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], -1)
        torch.testing.assert_close(y, merge.reduction(merge.norm(cat.view(1, -1, 16))))


def test_frozen_stages_and_no_weight_decay():
    swin = SwinTransformer(
        embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 1), window_size=2, ape=True, out_indices=(0, 1, 2),
        frozen_stages=2,
    )
    swin.train()
    frozen = [n for n, p in swin.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("patch_embed.", "absolute_pos_embed", "layers.0.")) for n in frozen)
    assert all(p.requires_grad for p in swin.layers[1].parameters())
    assert not swin.patch_embed.training and not swin.layers[0].training and swin.layers[1].training
    leaf_names = {n.rsplit(".", 1)[-1] for n, _ in swin.named_parameters()}
    assert swin.no_weight_decay() == {"absolute_pos_embed", "relative_position_bias_table"} <= leaf_names
    with torch.no_grad():
        assert [tuple(y.shape) for y in swin.eval()(torch.randn(1, 3, 30, 22))] == [
            (1, 8, 8, 6), (1, 16, 4, 3), (1, 32, 2, 2)
        ]


# ----------------------------------------------------------------------------------------------------
# Converter


def converter():
    spec = importlib.util.spec_from_file_location("convert_swin_to_d2", REPO / "tools" / "convert_swin_to_d2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timm_swin_t_checkpoint() -> Dict[str, torch.Tensor]:
    """A timm (>= 0.9) Swin-T state dict with the reference names and shapes and random values:
    merging at the start of the next stage, ``head.fc``, no relative_position_index, no output norms."""
    manifest = json.loads(
        shared_path("reference", "mask2former", SWIN_T_M2F[:-5].replace("/", "__") + ".json").read_text()
    )
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in backbone_entries(manifest):
        key = key[len("backbone."):]
        if key.endswith("relative_position_index") or key.startswith("norm"):
            continue
        if ".downsample." in key:
            stage, rest = key[len("layers."):].split(".", 1)
            key = f"layers.{int(stage) + 1}.{rest}"
        sd[key] = torch.randn(shape, generator=g)
    sd.update({"norm.weight": torch.randn(768), "norm.bias": torch.randn(768),
               "head.fc.weight": torch.randn(1000, 768), "head.fc.bias": torch.randn(1000)})
    return sd


def test_converter_round_trip_timm_swin_t(tmp_path):
    sd = timm_swin_t_checkpoint()
    src, dst = tmp_path / "swin_t_timm.pth", tmp_path / "swin_t.pkl"
    torch.save(sd, src)
    assert converter().main([str(src), str(dst)]) == 0

    with open(dst, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "third_party" and data["matching_heuristics"] is True
    weights = data["model"]
    original = {}
    for k, v in sd.items():
        if k.startswith("layers.") and ".downsample." in k:
            stage, rest = k[len("layers."):].split(".", 1)
            k = f"layers.{int(stage) - 1}.{rest}"
        original[k] = v
    swin_keys = [
        k[len("backbone."):] for k, _ in entries(m2f_backbone(SWIN_T_M2F)) if not k.startswith("backbone.norm")
    ]
    assert list(weights) == swin_keys  # the original names, in the backbone's order
    for k, v in weights.items():
        ref = relative_position_index((7, 7)) if k.endswith("relative_position_index") else original[k]
        assert torch.equal(torch.as_tensor(v), ref), k

    # Loads by suffix into Mask2Former's backbone (backbone.*) and Transfiner's (backbone.bottom_up.*).
    m2f = nn.Module()
    m2f.backbone = build_backbone(load_cfg(M2F_CONFIGS / SWIN_T_M2F))
    transfiner = nn.Module()
    transfiner.backbone = build_backbone(load_cfg(REPO / TRANSFINER_SWIN["mask_rcnn_swint_FPN_3x"]))
    for model, swin in ((m2f, m2f.backbone), (transfiner, transfiner.backbone.bottom_up)):
        DetectionCheckpointer(model).load(str(dst))
        state = swin.state_dict()
        for k in swin_keys:
            assert torch.equal(state[k], torch.as_tensor(weights[k])), k
        for i in range(4):  # detection-only output norms keep their initial values
            assert torch.equal(state[f"norm{i}.weight"], torch.ones(96 * 2 ** i))


def tiny_original_checkpoint() -> Dict[str, torch.Tensor]:
    """The official Microsoft layout of a tiny Swin (with classifier and attn_mask entries)."""
    swin = SwinTransformer(embed_dim=8, depths=(2, 1), num_heads=(1, 2), window_size=3, out_indices=())
    sd = dict(swin.state_dict())
    sd.update({"norm.weight": torch.ones(16), "norm.bias": torch.zeros(16), "head.weight": torch.zeros(10, 16),
               "head.bias": torch.zeros(10), "layers.0.blocks.1.attn_mask": torch.zeros(4, 9, 9)})
    return sd


def test_converter_official_layout_and_reports():
    tool = converter()
    out, report = tool.convert(tiny_original_checkpoint())
    assert report["layout"] == "original" and not report["unmatched"] and not report["missing"]
    assert sorted(report["dropped"]) == [
        "head.bias", "head.weight", "layers.0.blocks.1.attn_mask", "norm.bias", "norm.weight"
    ]
    assert report["swin"]["depths"] == [2, 1] and report["swin"]["window_size"] == 3
    sd = tiny_original_checkpoint()
    sd["layers.1.blocks.0.mlp.fc1.weight"] = torch.zeros(5, 16)  # wrong shape
    del sd["layers.1.blocks.0.norm2.bias"]
    _, report = tool.convert(sd)
    assert report["unmatched"] == ["layers.1.blocks.0.mlp.fc1.weight [5, 16] (backbone: [64, 16])"]
    assert report["missing"] == ["layers.1.blocks.0.norm2.bias [16]"]


def test_converter_refuses_unmatched_keys(tmp_path):
    sd = tiny_original_checkpoint()
    sd["layers.0.blocks.0.attn.extra_scale"] = torch.ones(1)
    src, dst = tmp_path / "in.pth", tmp_path / "out.pkl"
    torch.save({"model": sd}, src)
    r = subprocess.run([sys.executable, "tools/convert_swin_to_d2.py", str(src), str(dst)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "layers.0.blocks.0.attn.extra_scale" in r.stderr and "nothing written" in r.stderr
    assert not dst.exists()
