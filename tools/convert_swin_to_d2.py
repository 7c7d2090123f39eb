#!/usr/bin/env python
"""Converts an ImageNet Swin Transformer checkpoint into a Detectron2 ``.pkl`` for ``MODEL.WEIGHTS``.

    python tools/convert_swin_to_d2.py swin_tiny_patch4_window7_224.pth swin_tiny_patch4_window7_224.pkl

Accepted inputs (``torch.load``-able):
* the official Microsoft release (github.com/microsoft/Swin-Transformer): ``{"model": state_dict}``
  with the original names (``patch_embed.proj.weight``, ``layers.{i}.blocks.{j}.attn.qkv.weight``,
  ``layers.{i}.downsample.*`` for stages 0..2, ``norm.*``, ``head.*``, ``...attn_mask``);
* a timm ``SwinTransformer`` state dict (bare, or under ``"state_dict"`` / ``"model"``): timm >= 0.9
  puts each patch merging at the start of the next stage (``layers.{i+1}.downsample``), names the
  classifier ``head.fc`` and does not store ``relative_position_index``; older timm uses the
  original names.

Output, as facebookresearch/Mask2Former's ``tools/convert-pretrained-swin-model-to-d2.py``: a pickle of
``{"model": {name: numpy array}, "__author__": "third_party", "matching_heuristics": True}`` with the
original Swin names and no prefix, so that Detectron2's checkpointer matches them by suffix to
``backbone.*`` (``D2SwinTransformer``) as well as to ``backbone.bottom_up.*`` (Transfiner's Swin FPN).
Differences from the official script, which copies the dict unchanged: timm names are mapped back to
the original ones; ``relative_position_index`` is added where the input lacks it (it is a constant of
the window size); the classifier-only entries (``head.*``, the final ``norm.*``, ``attn_mask``
buffers) are dropped, because the suffix matching could otherwise pair the 1-D ``norm.weight`` with a
same-sized ``*.norm.weight`` of the detector.

The Swin variant (embed dim, depths, heads, window, MLP ratio, biases, APE) is read from the tensors
and the converted dict is checked against that Swin's state dict (without the detection-only output
norms ``norm0..norm3``, which start at 1 / 0). Any input entry that is not a known classifier-only
entry and matches no backbone entry by name and shape, and any missing backbone entry, is reported;
the script then writes nothing and exits with status 1.
"""
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from segcommon.backbone.swin import SwinTransformer, relative_position_index  # noqa: E402
from segcommon import checkpoint_conversion as conversion  # noqa: E402
from segcommon.checkpoint_conversion import ConversionError  # noqa: E402

# Entries of the ImageNet classifiers that the dense backbones do not have.
CLASSIFIER_ONLY = re.compile(r"^(head\..*|norm\.(weight|bias)|(.*\.)?attn_mask)$")


def _layer_ids(keys, pattern: str) -> List[int]:
    return sorted({int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m})


def to_original_names(sd: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Maps timm >= 0.9 names to the original ones; returns (state dict, detected layout)."""
    stages = _layer_ids(sd, r"layers\.(\d+)\.blocks\.")
    merges = _layer_ids(sd, r"layers\.(\d+)\.downsample\.")
    # Original: merging at the end of stages 0..n-2; timm >= 0.9: at the start of stages 1..n-1.
    timm_layout = "head.fc.weight" in sd or (bool(merges) and 0 not in merges and bool(stages) and stages[-1] in merges)
    if not timm_layout:
        return sd, "original"
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", k)
        k = re.sub(r"^head\.fc\.", "head.", k)
        out[k] = v
    return out, "timm"


def infer_swin_kwargs(sd: Dict[str, torch.Tensor]) -> Dict:
    """Reads the constructor arguments of the ``SwinTransformer`` that owns ``sd`` from its shapes."""
    if "patch_embed.proj.weight" not in sd:
        raise ConversionError("no 'patch_embed.proj.weight': not a Swin Transformer checkpoint")
    embed_dim, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    stages = _layer_ids(sd, r"layers\.(\d+)\.blocks\.")
    if stages != list(range(len(stages))) or not stages:
        raise ConversionError(f"stages must be numbered 0..n-1, found {stages}")
    depths, heads = [], []
    for i in stages:
        blocks = _layer_ids(sd, rf"layers\.{i}\.blocks\.(\d+)\.")
        if blocks != list(range(len(blocks))):
            raise ConversionError(f"blocks of stage {i} must be numbered 0..n-1, found {blocks}")
        depths.append(len(blocks))
        table = sd.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table")
        if table is None:
            raise ConversionError(f"no relative position bias table in stage {i}")
        heads.append(table.shape[1])
    side = round(sd["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0] ** 0.5)
    window = (side + 1) // 2
    fc1 = sd.get("layers.0.blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise ConversionError("no 'layers.0.blocks.0.mlp.fc1.weight': cannot infer the MLP ratio")
    kwargs = dict(
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        mlp_ratio=fc1.shape[0] / embed_dim,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd,
        patch_norm="patch_embed.norm.weight" in sd,
        ape="absolute_pos_embed" in sd,
        out_indices=(),  # the output norms norm0..3 are detection-only: not expected in the input
    )
    if kwargs["ape"]:
        ape = sd["absolute_pos_embed"]  # (1, L, C) original, (1, H, W, C) timm, (1, C, H, W) detection
        if ape.dim() == 3:
            tokens = ape.shape[1]
        elif ape.shape[1] == embed_dim:
            tokens = ape.shape[2] * ape.shape[3]
        else:
            tokens = ape.shape[1] * ape.shape[2]
        kwargs["pretrain_img_size"] = round(tokens ** 0.5) * patch
    return kwargs


def _ape_to_d2(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Absolute position embedding to the detection layout (1, C, H, W) from the classifier's
    (1, H*W, C) (original) or (1, H, W, C) (timm >= 0.9)."""
    _, c, h, w = shape
    if value.shape == shape:
        return value
    if value.dim() == 3 and tuple(value.shape) == (1, h * w, c):
        return value.transpose(1, 2).reshape(1, c, h, w)
    if value.dim() == 4 and tuple(value.shape) == (1, h, w, c):
        return value.permute(0, 3, 1, 2)
    return value


def convert(sd: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Returns (converted state dict, report). The report holds the input ``layout`` ("original" or
    "timm"), the inferred ``swin`` constructor arguments and the lists of ``unmatched``, ``missing``,
    ``dropped`` and ``added`` keys; the conversion succeeded iff ``unmatched`` and ``missing`` are empty."""
    sd, layout = to_original_names(sd)
    kwargs = infer_swin_kwargs(sd)
    with torch.device("meta"):  # shapes only: nothing is allocated, even for Swin-L
        expected = {k: v.shape for k, v in SwinTransformer(**kwargs).state_dict().items()}

    out: Dict[str, torch.Tensor] = {}
    report: Dict[str, Any] = {"layout": layout, "swin": kwargs}
    report.update({kind: [] for kind in ("unmatched", "missing", "dropped", "added")})
    for k, v in sd.items():
        if k == "absolute_pos_embed" and k in expected:
            v = _ape_to_d2(v, expected[k])
        if k in expected and v.shape == expected[k]:
            out[k] = v
        elif CLASSIFIER_ONLY.match(k) and k not in expected:
            report["dropped"].append(k)
        else:
            shape = f"{list(v.shape)} (backbone: {list(expected[k])})" if k in expected else list(v.shape)
            report["unmatched"].append(f"{k} {shape}")
    for k, shape in expected.items():
        if k in out or k in sd:  # present with a wrong shape: already reported as unmatched
            continue
        if k.endswith("relative_position_index"):
            out[k] = relative_position_index((kwargs["window_size"],) * 2)
            report["added"].append(k)
        else:
            report["missing"].append(f"{k} {list(shape)}")
    out = {k: out[k] for k in expected if k in out}  # the backbone's order
    return out, report


def main(argv=None) -> int:
    args = conversion.converter_parser(__doc__, "ImageNet Swin checkpoint (.pth)").parse_args(argv)
    loaded = conversion.load_and_convert(args, convert)
    if loaded is None:
        return 2
    sd, out, report = loaded

    kwargs = report["swin"]
    print(
        f"{args.input}: {report['layout']} layout; Swin with embed_dim {kwargs['embed_dim']}, depths "
        f"{kwargs['depths']}, heads {kwargs['num_heads']}, window {kwargs['window_size']}"
    )
    if report["dropped"]:
        print(f"dropped {len(report['dropped'])} classifier-only entries: {', '.join(report['dropped'])}")
    if report["added"]:
        print(f"added {len(report['added'])} relative_position_index buffers (computed from the window size)")
    if conversion.report_problems({kind: report[kind] for kind in ("unmatched", "missing")}):
        return 1
    # Backbone-only names (no "backbone." prefix): the checkpointer matches them by suffix.
    conversion.save_d2_checkpoint(out, args.output, "third_party", True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
