#!/usr/bin/env python
"""Converts MMSegmentation checkpoints of CFT (BebDong/EMOSeg) and its backbones into Detectron2 ``.pkl``.

    python tools/convert_cft_mmseg.py INPUT.pth OUTPUT.pkl [--config-file CFG.yaml] [--standard-sign]

Accepted inputs (``torch.load``-able; the MMEngine container's ``state_dict`` is unwrapped):
* a segmentation checkpoint: ``backbone.*`` and ``decode_head.*`` entries;
* an ImageNet backbone file in MMSeg/MMCV naming without prefix (``open-mmlab://resnet{50,101}_v1c``,
  MMSeg's ``mit_b{0..5}`` files, MMSeg-keyed Swin files).

Renaming (``shared/specs/cft.md`` 7.7):
* head: ``decode_head.<name>`` -> ``sem_seg_head.<name>`` (the Detectron2 head uses the reference's
  names); ``decode_head.loss_decode.<i>.criterion.empty_weight`` (an unused loss buffer) is dropped.
  ``--standard-sign`` negates the key half (rows ``[0, C)``) of every ``cfts.<i>.cross_attn.kv.embed``
  weight and bias, for a model built with ``MODEL.CFT.NEGATE_ATTN_LOGITS False``: the attention
  ``softmax(+q.(-k))`` then equals the reference's ``softmax(-q.k)`` exactly;
* ResNetV1c -> Detectron2 DeepLab ResNet (deep stem ``stem.conv1..3``, ``res{2..5}``), ``fc.*`` dropped;
* MiT (MMSeg names) -> the original SegFormer names of ``segcommon/backbone/mit.py`` (the attention's
  ``in_proj`` split into ``q`` and ``kv``, the FFN's 1x1 conv kernels flattened to Linear weights);
* Swin (MMSeg names) -> the original names of ``D2SwinTransformer``, with the patch-merging channel
  re-ordering (MMSeg's unfold order -> the original concatenation order).
Backbone entries get the ``backbone.`` prefix.

Output: a pickle of ``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": False}``
(explicit full names). Every input entry must match a rule (or be a known dropped entry); with
``--config-file`` the result is also checked against the state dict of the model that config builds
(names and shapes; missing entries reported). Any unmatched, mismatched or missing entry is listed, nothing
is written and the exit status is 1; an unreadable input gives status 2.
"""
import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from segcommon import checkpoint_conversion as conversion  # noqa: E402
from segcommon.checkpoint_conversion import ConversionError  # noqa: E402

DROP = "<drop>"  # rename result: a known entry that is not carried over

# Reference head names (decode_head.* without the prefix) that exist in CFTHead.
HEAD_NAME = re.compile(r"^(lateral_convs|fpn_convs|cfts|scale_heads|conv_seg)\.")
HEAD_DROPPED = re.compile(r"^loss_decode\.\d+\.criterion\.empty_weight$")
KV_EMBED = re.compile(r"^sem_seg_head\.cfts\.\d+\.cross_attn\.kv\.embed\.(weight|bias)$")


# ----------------------------------------------------------------------------------------------------
# Backbones. Each rename takes an MMSeg name (without "backbone.") and its tensor and returns a list of
# (new name, tensor) pairs, [(DROP, None)] for a known dropped entry, or [] when no rule matches.

Renamed = List[Tuple[str, Optional[torch.Tensor]]]
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def rename_resnet_v1c(name: str, v: torch.Tensor) -> Renamed:
    """MMCV ResNetV1c -> Detectron2 DeepLab ResNet (deep stem)."""
    m = re.match(r"^stem\.(\d)\.(.+)$", name)
    if m:
        conv = {"0": 1, "1": 1, "3": 2, "4": 2, "6": 3, "7": 3}.get(m.group(1))
        if conv is None:
            return []
        is_bn = m.group(1) in ("1", "4", "7")
        if is_bn and re.fullmatch(_BN, m.group(2)):
            return [(f"stem.conv{conv}.norm.{m.group(2)}", v)]
        if not is_bn and m.group(2) == "weight":
            return [(f"stem.conv{conv}.weight", v)]
        return []
    m = re.match(r"^layer(\d)\.(\d+)\.(.+)$", name)
    if m:
        res, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
        prefix = f"res{res}.{block}"
        for pattern, repl in (
            (r"^conv(\d)\.weight$", r"conv\1.weight"),
            (rf"^bn(\d)\.{_BN}$", r"conv\1.norm.\2"),
            (r"^downsample\.0\.weight$", "shortcut.weight"),
            (rf"^downsample\.1\.{_BN}$", r"shortcut.norm.\1"),
        ):
            if re.match(pattern, rest):
                return [(f"{prefix}.{re.sub(pattern, repl, rest)}", v)]
        return []
    if name.startswith("fc."):
        return [(DROP, None)]
    return []


def rename_mit(name: str, v: torch.Tensor) -> Renamed:
    """MMSeg MixVisionTransformer -> original SegFormer names (``segcommon/backbone/mit.py``)."""
    m = re.match(r"^layers\.(\d+)\.0\.(projection|norm)\.(weight|bias)$", name)
    if m:
        part = "proj" if m.group(2) == "projection" else "norm"
        return [(f"patch_embed{int(m.group(1)) + 1}.{part}.{m.group(3)}", v)]
    m = re.match(r"^layers\.(\d+)\.2\.(weight|bias)$", name)
    if m:
        return [(f"norm{int(m.group(1)) + 1}.{m.group(2)}", v)]
    m = re.match(r"^layers\.(\d+)\.1\.(\d+)\.(.+)$", name)
    if not m:
        return [(DROP, None)] if name.startswith("head.") else []
    prefix, rest = f"block{int(m.group(1)) + 1}.{m.group(2)}", m.group(3)
    if re.fullmatch(r"norm[12]\.(weight|bias)", rest) or re.fullmatch(r"attn\.(sr|norm)\.(weight|bias)", rest):
        return [(f"{prefix}.{rest}", v)]
    m = re.fullmatch(r"attn\.attn\.in_proj_(weight|bias)", rest)
    if m:
        c = v.shape[0] // 3
        return [(f"{prefix}.attn.q.{m.group(1)}", v[:c]), (f"{prefix}.attn.kv.{m.group(1)}", v[c:])]
    m = re.fullmatch(r"attn\.attn\.out_proj\.(weight|bias)", rest)
    if m:
        return [(f"{prefix}.attn.proj.{m.group(1)}", v)]
    m = re.fullmatch(r"ffn\.layers\.(0|1|4)\.(weight|bias)", rest)
    if m:
        target = {"0": "mlp.fc1", "1": "mlp.dwconv.dwconv", "4": "mlp.fc2"}[m.group(1)]
        if m.group(1) in ("0", "4") and m.group(2) == "weight":
            v = v.flatten(1)  # 1x1 conv kernel (out, in, 1, 1) -> Linear weight (out, in)
        return [(f"{prefix}.{target}.{m.group(2)}", v)]
    return []


def _merging_mmseg_to_original(v: torch.Tensor, dim: int) -> torch.Tensor:
    """Re-orders the 4C input channels of a patch merging from MMSeg's unfold order (index c * 4 + g,
    neighbourhood g in x00, x01, x10, x11 order) to the original concatenation order
    (g * C + c with x00, x10, x01, x11)."""
    shape = list(v.shape)
    c = shape[dim] // 4
    v = v.movedim(dim, -1).reshape(*[s for i, s in enumerate(shape) if i != dim], c, 4)
    v = v.transpose(-1, -2)[..., [0, 2, 1, 3], :].reshape(*[s for i, s in enumerate(shape) if i != dim], 4 * c)
    return v.movedim(-1, dim).contiguous()


def rename_swin(name: str, v: torch.Tensor) -> Renamed:
    """MMSeg SwinTransformer -> original names (``segcommon/backbone/swin.py``)."""
    m = re.match(r"^patch_embed\.(projection|norm)\.(weight|bias)$", name)
    if m:
        return [(f"patch_embed.{'proj' if m.group(1) == 'projection' else 'norm'}.{m.group(2)}", v)]
    m = re.match(r"^norm(\d)\.(weight|bias)$", name)
    if m:
        return [(name, v)]
    m = re.match(r"^stages\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$", name)
    if m:
        dim = 1 if m.group(2) == "reduction.weight" else 0
        return [(f"layers.{m.group(1)}.downsample.{m.group(2)}", _merging_mmseg_to_original(v, dim))]
    m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$", name)
    if not m:
        return [(DROP, None)] if name.startswith("head.") or name in ("norm.weight", "norm.bias") else []
    prefix, rest = f"layers.{m.group(1)}.blocks.{m.group(2)}", m.group(3)
    for pattern, repl in (
        (r"^attn\.w_msa\.(qkv\.weight|qkv\.bias|proj\.weight|proj\.bias|relative_position_bias_table|"
         r"relative_position_index)$", r"attn.\1"),
        (r"^ffn\.layers\.0\.0\.(weight|bias)$", r"mlp.fc1.\1"),
        (r"^ffn\.layers\.1\.(weight|bias)$", r"mlp.fc2.\1"),
        (r"^(norm[12])\.(weight|bias)$", r"\1.\2"),
    ):
        if re.match(pattern, rest):
            return [(f"{prefix}.{re.sub(pattern, repl, rest)}", v)]
    return []


BACKBONES: Dict[str, Tuple[str, Callable[[str, torch.Tensor], Renamed]]] = {
    # kind: (a name only that backbone has, rename)
    "resnet_v1c": ("stem.0.weight", rename_resnet_v1c),
    "mit": ("layers.0.0.projection.weight", rename_mit),
    "swin": ("patch_embed.projection.weight", rename_swin),
}


def detect_backbone(names) -> Optional[str]:
    names = set(names)
    found = [kind for kind, (marker, _) in BACKBONES.items() if marker in names]
    if len(found) > 1:
        raise ConversionError(f"entries of several backbones ({found}) in one checkpoint")
    return found[0] if found else None


# ----------------------------------------------------------------------------------------------------


def convert(sd: Dict[str, torch.Tensor], standard_sign: bool = False) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Returns (converted state dict with full Detectron2 names, report). The report holds the
    ``backbone`` kind (or None), and lists ``unmatched`` and ``dropped`` input names and ``negated``
    output names; the conversion succeeded iff ``unmatched`` is empty."""
    segmentation = any(k.startswith(("backbone.", "decode_head.")) for k in sd)
    bb_names = [k[len("backbone."):] for k in sd if k.startswith("backbone.")] if segmentation else list(sd)
    kind = detect_backbone(bb_names)
    report: Dict[str, Any] = {"backbone": kind, "unmatched": [], "dropped": [], "negated": []}
    out: Dict[str, torch.Tensor] = {}

    def put(src: str, renamed: Renamed, prefix: str) -> None:
        if not renamed:
            report["unmatched"].append(f"{src} {list(sd[src].shape)}")
        elif renamed[0][0] == DROP:
            report["dropped"].append(src)
        else:
            for name, value in renamed:
                out[prefix + name] = value

    for k, v in sd.items():
        if segmentation and k.startswith("decode_head."):
            name = k[len("decode_head."):]
            if HEAD_DROPPED.match(name):
                put(k, [(DROP, None)], "")
            else:
                put(k, [(name, v)] if HEAD_NAME.match(name) else [], "sem_seg_head.")
        elif segmentation and not k.startswith("backbone."):
            # data_preprocessor mean/std buffers (when saved) are config, not weights.
            put(k, [(DROP, None)] if re.match(r"^data_preprocessor\.(mean|std)$", k) else [], "")
        else:
            name = k[len("backbone."):] if segmentation else k
            put(k, BACKBONES[kind][1](name, v) if kind else [], "backbone.")

    if standard_sign:
        for name in out:
            if KV_EMBED.match(name):
                value = out[name].clone()
                c = value.shape[0] // 2
                value[:c] = -value[:c]  # key rows: q.(-k) = -(q.k)
                out[name] = value
                report["negated"].append(name)
    return out, report


def expected_shapes(config_file: str, opts: List[str] = ()) -> Dict[str, torch.Size]:
    """Names and shapes of the state dict of the model ``config_file`` builds (on the meta device, so
    nothing is allocated; falls back to the CPU for modules that do not build there)."""
    from detectron2.modeling import META_ARCH_REGISTRY

    from segcommon.engine.defaults import setup_cfg

    cfg = setup_cfg(config_file, list(opts) + ["MODEL.DEVICE", "cpu"], check_datasets=False)
    builder = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    try:
        with torch.device("meta"):
            model = builder(cfg)
    except (RuntimeError, NotImplementedError):
        model = builder(cfg)
    return {k: v.shape for k, v in model.state_dict().items() if not k.startswith(("pixel_mean", "pixel_std"))}


def check(out: Dict[str, torch.Tensor], expected: Dict[str, torch.Size], partial: bool) -> Dict[str, List[str]]:
    """Converted entries absent from the model or of another shape (``mismatched``), and model
    entries not provided (``missing``; only the backbone's when ``partial``, i.e. for a backbone-only
    input)."""
    mismatched = [
        f"{k} {list(v.shape)} (model: {list(expected[k]) if k in expected else 'absent'})"
        for k, v in out.items()
        if k not in expected or tuple(expected[k]) != tuple(v.shape)
    ]
    missing = [
        f"{k} {list(s)}"
        for k, s in expected.items()
        if k not in out and (not partial or k.startswith("backbone."))
    ]
    return {"mismatched": mismatched, "missing": missing}


def main(argv=None) -> int:
    parser = conversion.converter_parser(__doc__, "MMSeg checkpoint or MMSeg/MMCV ImageNet backbone file (.pth)")
    parser.add_argument("--config-file", help="check the result against the model this config builds")
    parser.add_argument(
        "--standard-sign",
        action="store_true",
        help="negate the key projections, for MODEL.CFT.NEGATE_ATTN_LOGITS False",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for --config-file")
    args = parser.parse_args(argv)

    loaded = conversion.load_and_convert(args, lambda sd: convert(sd, args.standard_sign))
    if loaded is None:
        return 2
    sd, out, report = loaded
    print(f"{args.input}: {len(sd)} entries, backbone {report['backbone'] or 'none'}")
    if report["dropped"]:
        print(f"dropped {len(report['dropped'])} entries: {', '.join(report['dropped'])}")
    if report["negated"]:
        print(f"negated the key half of {len(report['negated'])} kv.embed entries (standard sign)")
    problems = {"unmatched": report["unmatched"]}
    if args.config_file:
        partial = not any(k.startswith("sem_seg_head.") for k in out)
        problems.update(check(out, expected_shapes(args.config_file, args.opts), partial))
    if conversion.report_problems(problems):
        return 1
    conversion.save_d2_checkpoint(
        out, args.output, "BebDong/EMOSeg (MMSegmentation), converted by tools/convert_cft_mmseg.py", False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
