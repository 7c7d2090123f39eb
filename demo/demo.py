#!/usr/bin/env python
"""Runs any model of the project on images and draws its predictions.

    python demo/demo.py --config-file F --input IMG_OR_DIR_OR_GLOB [...] --output FILE_OR_DIR \
        [--confidence-threshold 0.5] [--opts KEY VALUE ...]

Instance, panoptic and semantic results are drawn with Detectron2's ``Visualizer`` according to
what the model returns (panoptic first, then instances, then semantic), with class names from the
metadata of the config's first test set. An unreadable image is reported and skipped; the exit
status is the number of images that failed (capped at 100).
"""
import argparse
import glob
import logging
import os
import sys
import time
from typing import List

import torch
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from PIL import Image

from segcommon.engine import ConfigError, setup_cfg
from segcommon.visualization import draw_predictions

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("demo")


def expand_inputs(patterns: List[str]) -> List[str]:
    """Files, folders (their images, sorted) and glob patterns, in the order given."""
    paths = []
    for p in patterns:
        if os.path.isdir(p):
            paths += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif any(c in p for c in "*?["):
            paths += sorted(glob.glob(os.path.expanduser(p)))
        else:
            paths.append(p)  # a missing file is reported when it is read
    return paths


def output_path(output: str, input_path: str, many: bool) -> str:
    if many or os.path.isdir(output) or output.endswith(os.sep):
        os.makedirs(output, exist_ok=True)
        stem = os.path.splitext(os.path.basename(input_path))[0]
        return os.path.join(output, stem + ".png")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, help="output file (one input) or folder")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum instance score to draw")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="demo")
    setup_logger(name="fvcore")

    try:
        device = ["MODEL.DEVICE", "cpu"] if not torch.cuda.is_available() else []
        cfg = setup_cfg(args.config_file, device + args.opts, check_datasets=False)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    predictor = DefaultPredictor(cfg)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")

    paths = expand_inputs(args.input)
    if not paths:
        print(f"error: no images found in {args.input}", file=sys.stderr)
        return 2
    failed = 0
    for path in tqdm.tqdm(paths, disable=len(paths) < 2):
        try:
            image = read_image(path, format="BGR")  # DefaultPredictor converts to cfg.INPUT.FORMAT
        except Exception as e:  # unreadable or missing: report, count, go on
            logger.error(f"{path}: cannot read image ({type(e).__name__}: {e})")
            failed += 1
            continue
        start = time.perf_counter()
        predictions = predictor(image)
        elapsed = time.perf_counter() - start
        logger.info(f"{path}: {image.shape[1]}x{image.shape[0]} in {elapsed:.2f} s")
        vis = draw_predictions(predictions, image[:, :, ::-1], metadata, args.confidence_threshold)
        target = output_path(args.output, path, many=len(paths) > 1)
        Image.fromarray(vis).save(target)
    logger.info(f"{len(paths) - failed} image(s) drawn to {args.output}, {failed} failed")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
