#!/usr/bin/env python
"""Speed and memory of a model built from a config (random weights), or of one operator.

    python tools/benchmark.py --config-file F [--device cpu|cuda] [--threads N] [--train]
        [--input-size H W] [--batch-size B] [--train-size H W] [--runs N] [--warmup N] [--json OUT]
        [KEY VALUE ...]
    python tools/benchmark.py --op msdeform|roialign [--backward] [--device cpu|cuda] [--threads N]
        [--runs N] [--json OUT]

Model mode measures, on the current device:

* inference: latency per image (median and p90 of ``--runs`` runs after ``--warmup``), batch 1,
  under ``torch.inference_mode``, post-processing included, at the config's test size
  (``INPUT.MIN_SIZE_TEST`` x the 4:3 width capped by ``INPUT.MAX_SIZE_TEST``, or ``--input-size``);
  images/s; peak memory (RSS high-water mark on CPU, ``torch.cuda.max_memory_allocated`` on GPU);
* with ``--train``: one training iteration (forward, backward, optimizer step with the config's
  optimizer) at the config's training crop (``INPUT.IMAGE_SIZE`` for LSJ configs, else
  ``INPUT.CROP.SIZE`` when cropping, else ``INPUT.MIN_SIZE_TRAIN[-1]``; or ``--train-size``) and
  ``--batch-size`` images with synthetic targets (random boxes, their masks and a semantic map),
  with the first step's losses and gradient norm (weights and sampling are seeded, so two runs, e.g.
  with and without ``SEGZOO_ROIALIGN_IMPL=torchvision``, can be compared);
* parameters, and FLOPs of one inference at the test size (fvcore, one fused multiply-add counts
  as one flop, as the official repositories report them).

Operator mode times multi-scale deformable attention at Mask2Former R50's shapes for a 1024 x 1024
input (levels 1/8, 1/16, 1/32; 8 heads, 4 points, 256 channels; its transformer decoder uses
masked, not deformable, attention): the pure-PyTorch path (``reference_ms``) against the project's fast path
(``fast_ms``, ``null`` while no fast path is installed), with ``speedup`` and ``max_abs_diff``;
or RoIAlign at Mask Transfiner R50-FPN's training shapes (CPU only): torchvision's kernels against
the project's (``segcommon/layers/roi_align_fast.py``), in the same JSON fields.

A table is printed and, with ``--json``, written with torch version, thread count and device.
Nothing here is a test: the figures depend on the machine.
"""
import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

from segcommon.deploy.calibration import calibrate_batch_norms
from segcommon.engine import ConfigError, setup_cfg
from segcommon.solver import build_optimizer

logger = logging.getLogger("benchmark")


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Writing 5 to clear_refs resets the kernel's RSS high-water mark (VmHWM), Linux >= 4.0.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> float:
    """Peak since the last :func:`_reset_peak_memory`, in MiB (whole-process RSS on CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    # No /proc: the lifetime peak (KiB on Linux, bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def time_runs(fn: Callable[[], object], device: torch.device, runs: int, warmup: int) -> Dict[str, float]:
    """Runs ``fn`` ``warmup`` times, then times ``runs`` calls. Times in milliseconds."""
    for _ in range(warmup):
        fn()
    _sync(device)
    _reset_peak_memory(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "median_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "min_ms": min(times),
        "runs": runs,
        "peak_memory_mb": _peak_memory_mb(device),
    }


# ----------------------------------------------------------------------------------------------
# Model mode
# ----------------------------------------------------------------------------------------------
def default_test_size(cfg) -> Tuple[int, int]:
    """(H, W) of a 4:3 landscape image resized the way the config's test transform would."""
    h = cfg.INPUT.MIN_SIZE_TEST
    w = int(round(h * 4 / 3))
    if cfg.INPUT.MAX_SIZE_TEST:
        w = min(w, cfg.INPUT.MAX_SIZE_TEST)
    return h, w


def default_train_size(cfg) -> Tuple[int, int]:
    """(H, W) of a training input: the LSJ canvas, the crop, or the largest training short side."""
    if cfg.INPUT.DATASET_MAPPER_NAME.endswith("_lsj"):
        return cfg.INPUT.IMAGE_SIZE, cfg.INPUT.IMAGE_SIZE
    if cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.TYPE == "absolute":
        return tuple(cfg.INPUT.CROP.SIZE)
    h = max(cfg.INPUT.MIN_SIZE_TRAIN)
    return h, min(int(round(h * 4 / 3)), cfg.INPUT.MAX_SIZE_TRAIN or 10**9)


def num_classes(cfg) -> int:
    """Foreground classes of the model family the config builds."""
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        return cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if cfg.MODEL.META_ARCHITECTURE == "SOTR":
        return cfg.MODEL.SOTR.NUM_CLASSES
    return cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES


def synthetic_batch(
    batch_size: int, height: int, width: int, classes: int, num_objects: int = 5, seed: int = 0
) -> List[Dict]:
    """
    Training inputs as a dataset mapper returns them: ``image`` (3, H, W) float in [0, 255],
    ``instances`` with ``gt_boxes`` (XYXY, input pixels), ``gt_classes`` and ``gt_masks``
    (BitMasks of the boxes), and ``sem_seg`` (H, W) int64 painted from those boxes (0 elsewhere),
    so that instance, panoptic and semantic models all find the targets they read.
    """
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        xy = torch.rand(num_objects, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = (0.1 + 0.2 * torch.rand(num_objects, 2, generator=g)) * torch.tensor([width, height])
        boxes = torch.cat([xy, xy + wh], dim=1).floor()
        labels = torch.randint(0, classes, (num_objects,), generator=g)
        masks = torch.zeros(num_objects, height, width, dtype=torch.bool)
        sem_seg = torch.zeros(height, width, dtype=torch.long)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[i, y0:y1, x0:x1] = True
            sem_seg[y0:y1, x0:x1] = labels[i]
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = labels
        inst.gt_masks = BitMasks(masks)
        image = torch.rand(3, height, width, generator=g) * 255
        batch.append({"image": image, "instances": inst, "sem_seg": sem_seg, "height": height, "width": width})
    return batch


def benchmark_model(args, cfg) -> Dict:
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(0)  # same weights and sampling in every run, so runs can be compared
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    h, w = args.input_size or default_test_size(cfg)
    result: Dict = {"config": args.config_file, "parameters": n_params, "test_size": [h, w]}

    model.eval()
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    inputs = [{"image": image.to(device), "height": h, "width": w}]
    with torch.inference_mode():
        infer = time_runs(lambda: model(inputs), device, args.runs, args.warmup)
    infer["images_per_s"] = 1000.0 / infer["median_ms"]
    result["inference"] = infer

    if not args.no_flops:
        from detectron2.utils.analysis import FlopCountAnalysis

        with torch.no_grad():
            flops = FlopCountAnalysis(model, [{"image": image, "height": h, "width": w}])
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            result["gflops"] = flops.total() / 1e9

    if args.train:
        th, tw = args.train_size or default_train_size(cfg)
        batch = synthetic_batch(args.batch_size, th, tw, num_classes(cfg))
        # Random weights under frozen batch norms (R-CNN backbones) blow the activations up to
        # Inf/NaN, which Detectron2's RPN refuses in training: give the norms the statistics of
        # their inputs on the first image, as trained statistics would.
        normalized = (batch[0]["image"].to(device) - model.pixel_mean) / model.pixel_std
        sample = ImageList.from_tensors([normalized], model.backbone.size_divisibility).tensor
        calibrate_batch_norms(model, sample, forward=model.backbone)
        model.train()
        optimizer = build_optimizer(cfg, model)
        first: Dict = {}

        def step():
            losses = model(batch)
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            if not first:  # the first step's losses and gradient norm, to compare implementations
                first["losses"] = {k: v.item() for k, v in losses.items()}
                grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
                first["grad_norm"] = torch.stack(grads).norm().item()
            optimizer.step()

        torch.manual_seed(1)
        # R-CNN models log training statistics into Detectron2's event storage.
        with EventStorage():
            train = time_runs(step, device, max(1, args.runs // 4), min(args.warmup, 1))
        train.update(batch_size=args.batch_size, size=[th, tw], first_step=first)
        result["train"] = train
    return result


def model_table(result: Dict) -> str:
    inf = result["inference"]
    h, w = result["test_size"]
    lines = [
        f"config            {result['config']}",
        f"parameters        {result['parameters']:,}",
        f"inference {h}x{w}  median {inf['median_ms']:.1f} ms, p90 {inf['p90_ms']:.1f} ms, "
        f"{inf['images_per_s']:.2f} images/s, peak {inf['peak_memory_mb']:.0f} MiB",
    ]
    if "gflops" in result:
        lines.append(f"FLOPs             {result['gflops']:.1f} G")
    if "train" in result:
        t = result["train"]
        th, tw = t["size"]
        lines.append(
            f"train step        batch {t['batch_size']} x {th}x{tw}: median {t['median_ms']:.0f} ms, "
            f"peak {t['peak_memory_mb']:.0f} MiB"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Operator mode
# ----------------------------------------------------------------------------------------------
# (name, levels (H, W), queries or None for one query per input pixel). Mask2Former uses deformable
# attention only in its pixel decoder's encoder, where every pixel of the three levels queries.
MSDEFORM_CASES = [
    ("encoder R50 1024x1024", [(128, 128), (64, 64), (32, 32)], None),
]


def _msdeform_inputs(levels, queries, device, heads=8, channels=256, points=4, seed=0):
    """Inputs shaped as in the pixel decoder's encoder. Locations are placed as the trained model
    places them: each query's reference point (the centre of its own pixel, or a random point when
    ``queries`` is given) plus offsets of a few pixels of each level, which sets the memory locality
    both paths see."""
    g = torch.Generator().manual_seed(seed)
    n_in = sum(h * w for h, w in levels)
    head_dim = channels // heads
    value = torch.randn(1, n_in, heads, head_dim, generator=g)
    if queries is None:
        ref = torch.cat([
            torch.stack(torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")[::-1], -1).view(-1, 2)
            for h, w in levels
        ])
    else:
        ref = torch.rand(queries, 2, generator=g)
    n_q = ref.shape[0]
    sizes = torch.tensor([[w, h] for h, w in levels], dtype=torch.float32)  # (L, 2) as (x, y)
    offsets = torch.randn(1, n_q, heads, len(levels), points, 2, generator=g) * 2.0  # pixels
    loc = ref[None, :, None, None, None, :] + offsets / sizes[None, None, None, :, None, :]
    attn = torch.rand(1, n_q, heads, len(levels) * points, generator=g).softmax(-1)
    attn = attn.view(1, n_q, heads, len(levels), points)
    shapes = torch.tensor(levels, dtype=torch.long)
    start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return [t.to(device) for t in (value, shapes, start, loc, attn)]


def fast_msdeform() -> Optional[Callable]:
    """The project's compiled multi-scale deformable attention, or None where it cannot be built."""
    from mask2former.modeling.pixel_decoder.ms_deform_attn_fast import fast_path_available, ms_deform_attn_fast

    return ms_deform_attn_fast if fast_path_available() else None


def benchmark_msdeform(args, device: torch.device) -> Dict:
    from mask2former.modeling.pixel_decoder.ms_deform_attn import ms_deform_attn_core

    fast = fast_msdeform()
    cases = []
    for name, levels, queries in MSDEFORM_CASES:
        value, shapes, start, loc, attn = _msdeform_inputs(levels, queries, device)

        def run(fn):
            def call():
                v = value.detach().requires_grad_(args.backward)
                lo = loc.detach().requires_grad_(args.backward)
                a = attn.detach().requires_grad_(args.backward)
                with torch.set_grad_enabled(args.backward):
                    out = fn(v, shapes, start, lo, a)
                    if args.backward:
                        out.sum().backward()
                return out

            return call

        ref = time_runs(run(ms_deform_attn_core), device, args.runs, args.warmup)
        case = {"case": name, "levels": levels, "reference_ms": ref["median_ms"], "fast_ms": None,
                "speedup": None, "max_abs_diff": None}
        if fast is not None:
            f = time_runs(run(fast), device, args.runs, args.warmup)
            with torch.no_grad():
                diff = (fast(value, shapes, start, loc, attn) - ms_deform_attn_core(value, shapes, start, loc, attn))
            case.update(fast_ms=f["median_ms"], speedup=ref["median_ms"] / f["median_ms"],
                        max_abs_diff=diff.abs().max().item())
        cases.append(case)
    return {"op": "msdeform", "backward": args.backward, "fast_path": fast is not None, "cases": cases}


# RoIAlign at Mask Transfiner R50-FPN's training shapes: batch 2 at 800x1067, 256 channels, all boxes
# read from p2 (1/4), as small boxes do and as Transfiner's 28/56/112 RoIs always do:
# (name, output size, RoIs).
ROIALIGN_CASES = [
    ("box head 7x7", 7, 1024),
    ("mask head 14x14", 14, 256),
    ("Transfiner 28x28", 28, 30),
    ("Transfiner 56x56", 56, 30),
    ("Transfiner 112x112", 112, 30),
]


def _roialign_inputs(rois: int, image=(800, 1067), batch=2, channels=256, stride=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = image
    features = torch.randn(batch, channels, h // stride, w // stride, generator=g)
    size = 32 + torch.rand(rois, 2, generator=g) * 288  # box sides 32-320 px
    x0 = torch.rand(rois, generator=g) * (w - size[:, 0])
    y0 = torch.rand(rois, generator=g) * (h - size[:, 1])
    index = torch.randint(0, batch, (rois,), generator=g).float()
    boxes = torch.stack([index, x0, y0, x0 + size[:, 0], y0 + size[:, 1]], dim=1)
    return features, boxes


def benchmark_roialign(args, device: torch.device) -> Dict:
    """torchvision's CPU kernels (``reference_ms``) against the project's (``fast_ms``), aligned,
    adaptive sampling ratio, as Detectron2's ROIAlignV2 poolers call them."""
    from torchvision.ops import roi_align

    from segcommon.layers.roi_align_fast import (
        fast_roi_align_registered,
        register_fast_roi_align,
        unregister_fast_roi_align,
    )

    if device.type != "cpu":
        raise SystemExit("error: --op roialign times the CPU kernels only")
    was_registered = fast_roi_align_registered()
    cases = []
    for name, size, rois in ROIALIGN_CASES:
        features, boxes = _roialign_inputs(rois)
        grad = torch.randn(rois, features.shape[1], size, size, generator=torch.Generator().manual_seed(1))

        def call():
            x = features.detach().requires_grad_(args.backward)
            with torch.set_grad_enabled(args.backward):
                out = roi_align(x, boxes, (size, size), 0.25, 0, True)
                if args.backward:
                    out.backward(grad)
            return out, x.grad

        unregister_fast_roi_align()
        ref = time_runs(call, device, args.runs, args.warmup)
        ref_out, ref_grad = call()
        case = {"case": f"{name}, {rois} RoIs", "reference_ms": ref["median_ms"], "fast_ms": None,
                "speedup": None, "max_abs_diff": None}
        if register_fast_roi_align():
            f = time_runs(call, device, args.runs, args.warmup)
            out, grad_in = call()
            diff = (out - ref_out).abs().max().item()
            if args.backward:
                diff = max(diff, (grad_in - ref_grad).abs().max().item())
            case.update(fast_ms=f["median_ms"], speedup=ref["median_ms"] / f["median_ms"], max_abs_diff=diff)
        cases.append(case)
    if not was_registered:
        unregister_fast_roi_align()
    return {"op": "roialign", "backward": args.backward, "fast_path": cases[0]["fast_ms"] is not None,
            "cases": cases}


def op_table(result: Dict) -> str:
    what = {"msdeform": "multi-scale deformable attention", "roialign": "RoIAlign"}[result["op"]]
    lines = [f"{what} ({'forward+backward' if result['backward'] else 'forward'})"]
    for c in result["cases"]:
        fast = "no fast path installed" if c["fast_ms"] is None else (
            f"fast {c['fast_ms']:.1f} ms, speedup {c['speedup']:.2f}x, max |diff| {c['max_abs_diff']:.2e}")
        lines.append(f"  {c['case']:<30} reference {c['reference_ms']:.1f} ms; {fast}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
def header(device: torch.device) -> Dict:
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config-file", metavar="FILE")
    what.add_argument("--op", choices=["msdeform", "roialign"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--train", action="store_true", help="also time one training iteration")
    parser.add_argument("--backward", action="store_true", help="op mode: time forward+backward")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=2, help="training batch (default 2)")
    parser.add_argument("--train-size", type=int, nargs=2, metavar=("H", "W"), help="training input size")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--json", metavar="OUT", help="write the results here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="benchmark")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    device = torch.device(args.device)

    if args.op:
        result = (benchmark_msdeform if args.op == "msdeform" else benchmark_roialign)(args, device)
        table = op_table(result)
    else:
        try:
            cfg = setup_cfg(args.config_file, ["MODEL.DEVICE", args.device] + args.opts, check_datasets=False)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        result = benchmark_model(args, cfg)
        table = model_table(result)
    result = {"header": header(device), **result}
    h = result["header"]
    print(f"torch {h['torch']}, {h['threads']} threads, {h.get('gpu', h['processor'])} ({h['device']})")
    print(table)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        logger.info(f"results -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
