#!/usr/bin/env python
"""Runs an exported ONNX model with onnxruntime (CPU) on images and draws its predictions, as
demo/demo.py does with the PyTorch model.

    python tools/deploy/run_onnx.py --config-file F --model DIR/model.onnx --input IMG_OR_DIR_OR_GLOB [...] \
        --output FILE_OR_DIR [--confidence-threshold 0.5] [--threads N] [--compare [--perturb EPS]] [--opts KEY VALUE ...]

The config must be the one the model was exported from (same --opts): it gives the test-time resize,
the normalisation and the post-processing, which is the model's own inference code (built from the
config; its weights are not needed). With --compare, the PyTorch model (MODEL.WEIGHTS) also runs on
each image, and the largest absolute difference of every raw output, the agreement of the final masks
and both latencies are logged, with a summary at the end. --perturb EPS adds, per image, how far PyTorch's
own outputs move when the input is multiplied by (1 + EPS * N(0, 1)): a model whose outputs move as
much under rounding-level noise (EPS ~ 1e-6) cannot be reproduced more closely by any other runtime.
"""
import argparse
import logging
import os
import sys
import time
from typing import List

import numpy as np
import torch
import tqdm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from demo.demo import expand_inputs, output_path  # noqa: E402

from segcommon.deploy import OnnxPredictor, build_export_adapter, mask_agreement, run_adapter  # noqa: E402
from segcommon.engine import setup_tool_cfg  # noqa: E402
from segcommon.visualization import draw_predictions  # noqa: E402

logger = logging.getLogger("run_onnx")


def max_abs_differences(a: List[np.ndarray], b: List[np.ndarray]) -> List[float]:
    """Per output, the largest |a - b| (0 for empty outputs, inf when the shapes differ)."""
    return [
        float("inf") if x.shape != y.shape else float(np.abs(x - y).max()) if x.size else 0.0 for x, y in zip(a, b)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--model", required=True, metavar="ONNX", help="model.onnx from tools/deploy/export_model.py")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or glob patterns")
    parser.add_argument("--output", help="output file (one input) or folder; omit to draw nothing")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum instance score to draw")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime / PyTorch threads (0: their default)")
    parser.add_argument("--compare", action="store_true", help="also run the PyTorch model and report differences")
    parser.add_argument(
        "--perturb", type=float, default=0.0, metavar="EPS",
        help="with --compare, also run PyTorch on the input times (1 + EPS * N(0, 1)) and log how far that moves "
        "its raw outputs: the model's own sensitivity to rounding-level noise, to read the ONNX differences against",
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="run_onnx")

    cfg = setup_tool_cfg(args.config_file, args.opts)
    if args.compare and not cfg.MODEL.WEIGHTS:
        print("error: --compare needs MODEL.WEIGHTS, the weights the ONNX model was exported with", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(cfg)
    if args.compare:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    try:
        adapter = build_export_adapter(model)
        predictor = OnnxPredictor(cfg, args.model, adapter, num_threads=args.threads or None)
    except (KeyError, NotImplementedError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")

    paths = expand_inputs(args.input)
    if not paths:
        print(f"error: no images found in {args.input}", file=sys.stderr)
        return 2
    failed, worst_diff, worst_agreement, times = 0, 0.0, 1.0, {"onnxruntime": [], "pytorch": []}
    for path in tqdm.tqdm(paths, disable=len(paths) < 2):
        try:
            image = read_image(path, format="BGR")
        except Exception as e:  # unreadable or missing: report, count, go on
            logger.error(f"{path}: cannot read image ({type(e).__name__}: {e})")
            failed += 1
            continue
        x, image_size = predictor.preprocess(image)
        sizes = (tuple(x.shape[-2:]), image_size, tuple(image.shape[:2]))  # postprocess's size arguments
        start = time.perf_counter()
        outputs = predictor.run_network(x, image_size)
        result = adapter.postprocess(outputs, *sizes)
        times["onnxruntime"].append(time.perf_counter() - start)
        line = f"{path}: {image.shape[1]}x{image.shape[0]} (network input {x.shape[3]}x{x.shape[2]}) onnxruntime {times['onnxruntime'][-1]:.3f} s"
        if args.compare:
            start = time.perf_counter()
            reference = run_adapter(adapter, x, image_size)
            ref_result = adapter.postprocess(reference, *sizes)
            times["pytorch"].append(time.perf_counter() - start)
            diffs = max_abs_differences(adapter.align_outputs(outputs, reference), reference)
            scales = [float(np.abs(r).max()) if r.size else 0.0 for r in reference]
            agreement = mask_agreement(result, ref_result)
            worst_diff, worst_agreement = max([worst_diff] + diffs), min(worst_agreement, agreement)
            line += (
                f", pytorch {times['pytorch'][-1]:.3f} s; max |onnx - torch| "
                + ", ".join(f"{n} {d:.2e} (max |torch| {m:.3g})" for n, d, m in zip(adapter.output_names, diffs, scales))
                + f"; final masks agree on {100 * agreement:.3f}% of pixels"
            )
            if args.perturb:
                noise = np.random.RandomState(0).standard_normal(x.shape).astype(np.float32)
                perturbed = run_adapter(adapter, x * (1 + args.perturb * noise), image_size)
                sensitivity = max_abs_differences(adapter.align_outputs(perturbed, reference), reference)
                line += f"; PyTorch moved by input noise {args.perturb:g}: " + ", ".join(
                    f"{n} {d:.2e}" for n, d in zip(adapter.output_names, sensitivity)
                )
        logger.info(line)
        if args.output:
            vis = draw_predictions(result, image[:, :, ::-1], metadata, args.confidence_threshold)
            Image.fromarray(vis).save(output_path(args.output, path, many=len(paths) > 1))
    if times["onnxruntime"]:
        summary = f"{len(times['onnxruntime'])} image(s): onnxruntime mean {np.mean(times['onnxruntime']):.3f} s"
        if args.compare:
            summary += (
                f", pytorch mean {np.mean(times['pytorch']):.3f} s; largest raw-output difference {worst_diff:.2e},"
                f" lowest mask agreement {100 * worst_agreement:.3f}%"
            )
        logger.info(summary)
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
