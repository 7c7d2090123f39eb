#!/usr/bin/env python
"""Converts a torchvision ImageNet ResNet into a Detectron2 ``.pkl`` for ``MODEL.WEIGHTS``.

    python tools/convert_torchvision_resnet.py resnet50-11ad3fa6.pth R-50-torchvision.pkl

Accepted inputs (``torch.load``-able): the state dict of ``torchvision.models.resnet{18,34,50,101,152}``
(bare, or under ``"state_dict"`` / ``"model"``, ``module.`` prefix removed); ``resnext*`` and
``wide_resnet*`` files convert too (the groups and width per group are read from the tensors).

Renaming (torchvision -> ``build_resnet_backbone``):
* ``conv1.weight``, ``bn1.*`` -> ``stem.conv1.weight``, ``stem.conv1.norm.*``;
* ``layer{i}.{b}.conv{j}.weight``, ``layer{i}.{b}.bn{j}.*`` -> ``res{i+1}.{b}.conv{j}.weight``,
  ``res{i+1}.{b}.conv{j}.norm.*`` (BasicBlock: j in 1..2, Bottleneck: 1..3);
* ``layer{i}.{b}.downsample.0.weight``, ``.downsample.1.*`` -> ``res{i+1}.{b}.shortcut.weight``,
  ``res{i+1}.{b}.shortcut.norm.*``;
* dropped: the classifier ``fc.*`` and the ``num_batches_tracked`` counters of the batch norms.

Output: a pickle of ``{"model": {name: numpy array}, "__author__": "torchvision", "matching_heuristics":
True}`` with the backbone's names and no prefix, so that Detectron2's checkpointer matches them by suffix
to ``backbone.*`` (``build_resnet_backbone``) or ``backbone.bottom_up.*`` (``build_resnet_fpn_backbone``).
torchvision's Bottleneck strides its 3x3 conv and normalises RGB input by the ImageNet std, so the
config must set ``MODEL.RESNETS.STRIDE_IN_1X1 False``, ``MODEL.PIXEL_MEAN [123.675, 116.280, 103.530]``,
``MODEL.PIXEL_STD [58.395, 57.120, 57.375]`` and ``INPUT.FORMAT RGB`` (printed at the end, with the
depth and, for R18/R34, ``MODEL.RESNETS.RES2_OUT_CHANNELS 64``).

The depth is read from the number of blocks per stage and the block type; the converted dict is
checked against the state dict of the Detectron2 ResNet of that depth (built on the meta device).
Any input entry that is neither dropped nor renamed onto a backbone entry of the same shape, and any
backbone entry left unset, is reported; the script then writes nothing and exits with status 1 (2 when
the input cannot be read or is not a ResNet).
"""
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from segcommon import checkpoint_conversion as conversion  # noqa: E402
from segcommon.checkpoint_conversion import ConversionError  # noqa: E402

# (block type, blocks per stage) -> MODEL.RESNETS.DEPTH
DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var")

# torchvision name -> Detectron2 name, for the stem and (relative to ``layer{i}.{b}.``) a block.
STEM_NAMES = {"conv1.weight": "stem.conv1.weight", **{f"bn1.{p}": f"stem.conv1.norm.{p}" for p in BN_ENTRIES}}
BLOCK_NAMES = {
    **{f"conv{j}.weight": f"conv{j}.weight" for j in (1, 2, 3)},
    **{f"bn{j}.{p}": f"conv{j}.norm.{p}" for j in (1, 2, 3) for p in BN_ENTRIES},
    "downsample.0.weight": "shortcut.weight",
    **{f"downsample.1.{p}": f"shortcut.norm.{p}" for p in BN_ENTRIES},
}
BLOCK_ENTRY = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")

ADVICE = {  # what every converted torchvision ResNet needs in the config
    "MODEL.RESNETS.STRIDE_IN_1X1": "False",
    "MODEL.PIXEL_MEAN": "[123.675, 116.280, 103.530]",
    "MODEL.PIXEL_STD": "[58.395, 57.120, 57.375]",
    "INPUT.FORMAT": "RGB",
}


def d2_name(name: str) -> Optional[str]:
    """The Detectron2 name of a torchvision ResNet entry, or None when no rule applies."""
    if name in STEM_NAMES:
        return STEM_NAMES[name]
    m = BLOCK_ENTRY.match(name)
    if m and m.group(3) in BLOCK_NAMES:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.{BLOCK_NAMES[m.group(3)]}"
    return None


def is_dropped(name: str) -> bool:
    """The classifier and the batch-norm counters (of a batch norm the renaming knows)."""
    if name.startswith("fc."):
        return True
    return name.endswith(".num_batches_tracked") and d2_name(name[: -len("num_batches_tracked")] + "weight") is not None


def infer_resnet_options(sd: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """``MODEL.RESNETS`` options of the Detectron2 ResNet that matches ``sd``: DEPTH from the block type
    (the kernel of the first block's conv1) and the number of blocks per stage, NUM_GROUPS and
    WIDTH_PER_GROUP from the first 3x3 conv (Bottleneck), and RES2_OUT_CHANNELS (64 for R18/R34)."""
    if "conv1.weight" not in sd:
        raise ConversionError("no 'conv1.weight': not a torchvision ResNet checkpoint")
    counts = []
    for stage in range(1, 5):
        blocks = sorted({int(m.group(2)) for k in sd for m in [BLOCK_ENTRY.match(k)] if m and m.group(1) == str(stage)})
        if blocks != list(range(len(blocks))) or not blocks:
            raise ConversionError(f"blocks of layer{stage} must be numbered 0..n-1, found {blocks}")
        counts.append(len(blocks))
    conv1 = sd.get("layer1.0.conv1.weight")
    if conv1 is None or conv1.dim() != 4:
        raise ConversionError("no 4-D 'layer1.0.conv1.weight': cannot tell the block type")
    kind = "bottleneck" if conv1.shape[-1] == 1 else "basic"  # Bottleneck: 1x1 conv1; BasicBlock: 3x3
    depth = DEPTHS.get((kind, tuple(counts)))
    if depth is None:
        raise ConversionError(f"{kind} blocks per stage {counts} match no ResNet depth ({sorted(DEPTHS.values())})")
    options: Dict[str, Any] = {"DEPTH": depth, "RES2_OUT_CHANNELS": 64 if kind == "basic" else 256}
    if kind == "bottleneck":
        conv2 = sd.get("layer1.0.conv2.weight")
        if conv2 is None or conv2.dim() != 4 or conv2.shape[0] % conv2.shape[1]:
            shape = None if conv2 is None else list(conv2.shape)
            raise ConversionError(f"layer1.0.conv2.weight {shape}: not a grouped 3x3 conv")
        options["NUM_GROUPS"] = conv2.shape[0] // conv2.shape[1]
        options["WIDTH_PER_GROUP"] = conv2.shape[1]
    return options


def backbone_shapes(options: Dict[str, Any]) -> Dict[str, torch.Size]:
    """Names and shapes of the state dict of Detectron2's ``build_resnet_backbone`` with the given
    ``MODEL.RESNETS`` options and FrozenBN (i.e. without ``num_batches_tracked``), built on the meta
    device so that nothing is allocated."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = get_cfg()
    for key, value in options.items():
        setattr(cfg.MODEL.RESNETS, key, value)
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    with torch.device("meta"):
        backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    return {k: v.shape for k, v in backbone.state_dict().items()}


def convert(sd: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Returns (converted state dict in the backbone's order, report). The report holds the inferred
    ``resnets`` options and the lists of ``unmatched`` (no rule, or no such backbone entry),
    ``mismatched`` (wrong shape), ``missing`` (backbone entries not provided) and ``dropped`` names;
    the conversion succeeded iff the first three are empty."""
    options = infer_resnet_options(sd)
    expected = backbone_shapes(options)
    report: Dict[str, Any] = {"resnets": options}
    report.update({kind: [] for kind in ("unmatched", "mismatched", "missing", "dropped")})
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        target = d2_name(k)
        if target in expected:
            if tuple(v.shape) == tuple(expected[target]):
                out[target] = v
            else:
                report["mismatched"].append(f"{k} {list(v.shape)} (backbone {target}: {list(expected[target])})")
        elif is_dropped(k):
            report["dropped"].append(k)
        else:
            why = f" (-> {target}: not in the backbone)" if target else ""
            report["unmatched"].append(f"{k} {list(v.shape)}{why}")
    provided = {d2_name(k) for k in sd}  # a mis-shaped entry is reported once, as mismatched
    report["missing"] = [f"{k} {list(s)}" for k, s in expected.items() if k not in provided]
    return {k: out[k] for k in expected if k in out}, report


def advice(options: Dict[str, Any]) -> List[str]:
    """The config lines a model using the converted weights needs."""
    lines = [f"MODEL.RESNETS.{k} {v}" for k, v in options.items() if k in ("DEPTH", "RES2_OUT_CHANNELS")]
    if options.get("NUM_GROUPS", 1) != 1 or options.get("WIDTH_PER_GROUP", 64) != 64:
        lines += [f"MODEL.RESNETS.{k} {options[k]}" for k in ("NUM_GROUPS", "WIDTH_PER_GROUP")]
    return lines + [f"{k} {v}" for k, v in ADVICE.items()]


def main(argv=None) -> int:
    args = conversion.converter_parser(__doc__, "torchvision ImageNet ResNet state dict (.pth)").parse_args(argv)
    loaded = conversion.load_and_convert(args, convert)
    if loaded is None:
        return 2
    sd, out, report = loaded

    options = report["resnets"]
    print(f"{args.input}: {len(sd)} entries; torchvision ResNet-{options['DEPTH']}")
    classifier = [k for k in report["dropped"] if k.startswith("fc.")]
    if classifier:
        print(f"dropped the classifier: {', '.join(classifier)}")
    counters = len(report["dropped"]) - len(classifier)
    if counters:
        print(f"dropped {counters} num_batches_tracked counters")
    if conversion.report_problems({kind: report[kind] for kind in ("unmatched", "mismatched", "missing")}):
        return 1
    # Backbone-only names (no "backbone." prefix): the checkpointer matches them by suffix.
    conversion.save_d2_checkpoint(out, args.output, "torchvision", True)
    print("Use it with MODEL.WEIGHTS and these config settings (torchvision strides the 3x3 conv and "
          "takes RGB input normalised by the ImageNet std):")
    for line in advice(options):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
