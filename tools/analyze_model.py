#!/usr/bin/env python
"""Analyses a model built from a config, with random weights (nothing is downloaded).

    python tools/analyze_model.py --config-file F [--tasks parameter,flop,structure,manifest]
        [--output J] [--compare M.json] [--input-size H W] [KEY VALUE ...]

Tasks:
  parameter  parameter counts per module (fvcore's table)
  flop       FLOPs of inference on one random image of the config's test size (fvcore)
  structure  the module tree
  manifest   ``{"num_params": N, "state_dict": {key: shape}}``, the format of the reference
             manifests taken from the official implementations; written to --output (or stdout)
--compare M.json prints every missing, unexpected and mis-shaped state-dict key and a parameter
count mismatch against such a manifest, and exits with status 1 on any difference.
"""
import argparse
import json
import logging
import sys
import torch
from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis, parameter_count_table
from detectron2.utils.logger import setup_logger

from segcommon.engine import setup_tool_cfg
from segcommon.manifest import compare_manifests, model_manifest

logger = logging.getLogger("analyze_model")
TASKS = ("parameter", "flop", "structure", "manifest")


def flop_count(model: torch.nn.Module, height: int, width: int) -> int:
    """Total FLOPs (fvcore) of inference on one random (3, height, width) image."""
    image = torch.rand(3, height, width) * 255
    inputs = [{"image": image, "height": height, "width": width}]
    flops = FlopCountAnalysis(model, inputs)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return flops.total()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--tasks", default="parameter", help=f"comma-separated, of {','.join(TASKS)}")
    parser.add_argument("--output", metavar="JSON", help="where the manifest is written")
    parser.add_argument("--compare", metavar="JSON", help="reference manifest to compare against")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="image size for 'flop'")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="analyze_model")
    setup_logger(name="fvcore")

    tasks = [t for t in args.tasks.split(",") if t]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        parser.error(f"unknown task(s) {bad}; choose from {TASKS}")
    cfg = setup_tool_cfg(args.config_file, args.opts)

    model = build_model(cfg)
    model.eval()
    status = 0
    if "parameter" in tasks:
        logger.info("Parameter count:\n" + parameter_count_table(model, max_depth=5))
    if "structure" in tasks:
        logger.info("Model structure:\n" + str(model))
    if "flop" in tasks:
        h, w = args.input_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
        with torch.no_grad():
            total = flop_count(model, h, w)
        logger.info(f"FLOPs at {h}x{w}: {total / 1e9:.2f} G (fvcore counts one fused multiply-add as one flop)")
    if "manifest" in tasks or args.compare:
        manifest = model_manifest(model)
        if "manifest" in tasks:
            text = json.dumps(manifest, indent=1)
            if args.output:
                with open(args.output, "w") as f:
                    f.write(text)
                logger.info(f"manifest ({len(manifest['state_dict'])} keys, {manifest['num_params']:,} parameters) -> {args.output}")
            else:
                print(text)
        if args.compare:
            with open(args.compare) as f:
                reference = json.load(f)
            diffs = compare_manifests(manifest, reference)
            for line in diffs:
                print(line)
            if diffs:
                print(f"{len(diffs)} difference(s) against {args.compare}")
                status = 1
            else:
                print(f"matches {args.compare}: {len(reference['state_dict'])} keys, {reference['num_params']:,} parameters")
    return status


if __name__ == "__main__":
    sys.exit(main())
