#!/usr/bin/env python
"""Times this project's Mask2Former against the ``transformers`` package's on the same input.

    python tools/compare_transformers.py [--config-file F] [--threads 2] [--input-size 800 1216]
        [--runs 3] [--warmup 1] [--json OUT]

Both models are built with random weights (nothing is downloaded) from one configuration: the
config file's (default: Mask2Former R50 COCO instance segmentation) backbone depth, query count,
class count, pixel-decoder and transformer-decoder sizes are carried into a ``Mask2FormerConfig``
with a ResNet backbone. Each implementation runs in its own subprocess (so that each peak RSS is its
own) on the same random image, batch 1, ``torch.inference_mode``, with the same thread count:

* this project: ``model([{"image", "height", "width"}])``, i.e. normalisation, the network and the
  post-processing of the config's task (instance masks pasted at full resolution);
* ``transformers``: ``Mask2FormerForUniversalSegmentation(pixel_values=...)``, the network alone, on
  the same image normalised with the config's pixel mean and std.

Prints both medians, the ratio (transformers / ours) and both peak RSS; ``--json`` writes them.
Needs ``pip install transformers`` (or ``pip install -e .[compare]``). Nothing here is a test: the figures depend on the machine.
"""
import argparse
import json
import os
import subprocess
import sys
from typing import Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import header, time_runs  # noqa: E402

DEFAULT_CONFIG = "configs/mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml"


def transformers_config(cfg):
    """A ``Mask2FormerConfig`` (ResNet backbone) with the sizes of the project's config."""
    from transformers import Mask2FormerConfig, ResNetConfig

    depth = cfg.MODEL.RESNETS.DEPTH
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
    if depth not in blocks:
        raise SystemExit(f"error: only ResNet-50/101 backbones can be compared, got depth {depth}")
    head, dec = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    backbone = ResNetConfig(
        depths=blocks[depth], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone,
        num_labels=head.NUM_CLASSES,
        num_queries=dec.NUM_OBJECT_QUERIES,
        feature_size=head.CONVS_DIM,
        mask_feature_size=head.MASK_DIM,
        hidden_dim=dec.HIDDEN_DIM,
        encoder_layers=head.TRANSFORMER_ENC_LAYERS,
        decoder_layers=dec.DEC_LAYERS,
        num_attention_heads=dec.NHEADS,
        dim_feedforward=dec.DIM_FEEDFORWARD,
        encoder_feedforward_dim=1024,
        common_stride=head.COMMON_STRIDE,
        train_num_points=dec.TRAIN_NUM_POINTS,
    )


def run_one(args) -> Dict:
    """Times one implementation in this process."""
    torch.set_num_threads(args.threads)
    from segcommon.engine import setup_cfg

    cfg = setup_cfg(args.config_file, ["MODEL.DEVICE", "cpu"], check_datasets=False)
    h, w = args.input_size
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    torch.manual_seed(0)
    if args.impl == "ours":
        from detectron2.modeling import build_model

        model = build_model(cfg).eval()
        inputs = [{"image": image, "height": h, "width": w}]

        def call():
            return model(inputs)

    else:
        from transformers import Mask2FormerForUniversalSegmentation

        model = Mask2FormerForUniversalSegmentation(transformers_config(cfg)).eval()
        mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
        pixels = ((image - mean) / std)[None]

        def call():
            return model(pixel_values=pixels)

    with torch.inference_mode():
        result = time_runs(call, torch.device("cpu"), args.runs, args.warmup)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input-size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--impl", choices=["ours", "transformers"], help=argparse.SUPPRESS)  # subprocess mode
    args = parser.parse_args(argv)
    if args.impl:
        print(json.dumps(run_one(args)))
        return 0
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("error: the comparison needs the transformers package: pip install transformers", file=sys.stderr)
        return 2

    results = {}
    base = [sys.executable, os.path.abspath(__file__), "--config-file", args.config_file, "--threads",
            str(args.threads), "--input-size", *map(str, args.input_size), "--runs", str(args.runs),
            "--warmup", str(args.warmup)]
    for impl in ("ours", "transformers"):
        r = subprocess.run(base + ["--impl", impl], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"error: the {impl} run failed:\n{r.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[impl] = json.loads(r.stdout.strip().splitlines()[-1])
    ours, theirs = results["ours"], results["transformers"]
    out = {
        "header": header(torch.device("cpu")) | {"threads": args.threads},
        "config": args.config_file,
        "input_size": args.input_size,
        "ours": ours,
        "transformers": theirs,
        "speedup": theirs["median_ms"] / ours["median_ms"],
    }
    h, w = args.input_size
    print(f"Mask2Former, {args.config_file}, {h}x{w}, {args.threads} threads, median of {args.runs}:")
    print(f"  this project (post-processing included): {ours['median_ms'] / 1000:.2f} s, "
          f"peak {ours['peak_memory_mb']:.0f} MiB, {ours['parameters']:,} parameters")
    print(f"  transformers (network alone):            {theirs['median_ms'] / 1000:.2f} s, "
          f"peak {theirs['peak_memory_mb']:.0f} MiB, {theirs['parameters']:,} parameters")
    print(f"  ratio transformers / ours: {out['speedup']:.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
