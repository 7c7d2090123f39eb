#!/usr/bin/env python
"""Exports a model of the project, from the normalised image to its raw outputs.

    python tools/deploy/export_model.py --config-file F --format onnx|export|torchscript \
        --output DIR [--sample-image IMG] [--opts KEY VALUE ...]

Weights come from MODEL.WEIGHTS; when it is empty the model is randomly initialised, its batch-norm
statistics are set from the sample (segcommon/deploy/calibration.py) and its weights are written to
DIR/model_init.pth (for run_onnx.py --compare). The graph is the model's
export adapter (segcommon/deploy): one image (1, 3, H, W), normalised and zero-padded to the model's
size divisibility, to the raw outputs (Mask2Former: class and mask logits; SOTR: per-level class
logits and kernels, mask features; CFT: class logits at the input size). ONNX (opset 18) and
torch.export have a dynamic height and width; TorchScript is traced at the sample's size. The sample
is --sample-image after the test-time resize, else a noise image of MIN_SIZE_TEST x MIN_SIZE_TEST.
Post-processing is not in the graph: tools/deploy/run_onnx.py applies the model's own.

A failure is reported in one paragraph naming the blocking operator and model part; exit status 1.
"""
import argparse
import logging
import os
import sys
import time

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from segcommon.deploy import (
    EXPORT_FORMATS,
    ExportError,
    Preprocessor,
    build_export_adapter,
    calibrate_batch_norms,
    export_adapter,
)
from segcommon.engine import setup_tool_cfg

logger = logging.getLogger("export_model")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for model.{onnx,pt2,ts}")
    parser.add_argument("--sample-image", metavar="IMG", help="image traced through the model (default: noise)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="export_model")
    setup_logger(name="segcommon")

    cfg = setup_tool_cfg(args.config_file, args.opts)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    try:
        adapter = build_export_adapter(model)
    except (KeyError, NotImplementedError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2

    preprocess = Preprocessor.from_config(cfg, adapter.size_divisibility)
    if args.sample_image:
        try:
            image = read_image(args.sample_image, format="BGR")
        except Exception as e:
            print(f"error: cannot read {args.sample_image}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
    else:
        side = max(cfg.INPUT.MIN_SIZE_TEST, 64)
        image = np.random.RandomState(0).randint(0, 256, (side, side, 3)).astype(np.uint8)
    sample, image_size = preprocess(image)
    if not cfg.MODEL.WEIGHTS:
        # Batch-norm statistics from the sample keep random activations at unit scale (see
        # segcommon/deploy/calibration.py); the weights are saved so that run_onnx.py --compare can
        # run the same model in PyTorch.
        inputs = adapter.network_inputs(torch.from_numpy(sample), image_size)
        calibrated = calibrate_batch_norms(adapter, inputs[0], forward=lambda _: adapter(*inputs))
        os.makedirs(args.output, exist_ok=True)
        DetectionCheckpointer(model, save_dir=args.output).save("model_init")
        logger.warning(
            f"MODEL.WEIGHTS is empty: exporting a randomly initialised model ({calibrated} batch norms calibrated"
            f" on the sample), whose weights are saved as {os.path.join(args.output, 'model_init.pth')}"
        )

    start = time.perf_counter()
    try:
        path = export_adapter(adapter, torch.from_numpy(sample), args.format, args.output)
    except ExportError as e:
        print(f"error: export of {args.config_file} failed: {e}", file=sys.stderr)
        return 1
    logger.info(
        f"exported {type(model).__name__} ({args.format}, sample {tuple(sample.shape)}, outputs "
        f"{', '.join(adapter.output_names)}) to {path} in {time.perf_counter() - start:.1f} s "
        f"({os.path.getsize(path) / 2**20:.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
