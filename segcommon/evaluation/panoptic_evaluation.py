"""
Panoptic quality (PQ) evaluation without ``panopticapi``.

:class:`COCOPanopticEvaluator` is a drop-in replacement for Detectron2 v0.6's
``detectron2.evaluation.COCOPanopticEvaluator`` (same constructor, same ``process`` /
``evaluate`` contract, same result keys). Detectron2's version needs ``panopticapi``, which is
not on the package registry; this one computes PQ with ``hotcoco.panoptic`` (a reimplementation
of panopticapi's ``pq_compute``) or with :func:`pq_compute_reference`, a small NumPy
implementation of the same protocol kept here to cross-check hotcoco in the tests.

PQ definition (Kirillov et al., "Panoptic Segmentation", CVPR 2019), as panopticapi computes it:

* Per image, a ground-truth (gt) and a predicted segment of the **same category** match when
  ``IoU > 0.5``; matches are therefore unique. The union leaves out the predicted pixels that
  fall on gt VOID (id 0): ``union = area_pred + area_gt - inter - |pred ∩ VOID|``.
  ``area_gt`` is the ``area`` recorded in the gt json; ``area_pred`` is counted on the PNG.
* Crowd gt segments (``iscrowd == 1``) are never matched and never count as false negatives.
* An unmatched predicted segment is a false positive unless more than half of its area lies on
  gt VOID plus the crowd region of its own category (one crowd region per category per image:
  the last one listed).
* Per category: ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)``, ``SQ = sum(IoU) / TP``,
  ``RQ = TP / (TP + FP/2 + FN/2)``. "All", "Things", "Stuff" average these over the categories
  of the split that have at least one gt or predicted segment (``n`` of them).

Panoptic PNGs store a segment id per pixel as RGB with ``id = R + 256 * G + 256**2 * B``.
"""
import importlib.util
import io
import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from tabulate import tabulate

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

__all__ = ["COCOPanopticEvaluator", "pq_compute", "pq_compute_reference", "id2rgb", "rgb2id"]

logger = logging.getLogger(__name__)

# Segment id of unlabeled pixels in panoptic PNGs (COCO panoptic format).
VOID = 0
# Segment ids are < 256**3 (three 8-bit channels), so gt_id * OFFSET + pred_id is a unique key
# for a (gt segment, predicted segment) pair.
OFFSET = 256 * 256 * 256

_BACKENDS = ("hotcoco", "reference")
_SPLITS = (("All", None), ("Things", True), ("Stuff", False))

JsonLike = Union[str, os.PathLike, Dict[str, Any]]


def id2rgb(id_map: np.ndarray) -> np.ndarray:
    """
    Encode a segment-id map as a panoptic PNG image.

    Args:
        id_map: (H, W) integer array of segment ids in [0, 256**3).

    Returns:
        (H, W, 3) uint8 array with ``id = R + 256 * G + 256**2 * B``.
    """
    ids = np.asarray(id_map).astype(np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=-1).astype(
        np.uint8
    )


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """
    Inverse of :func:`id2rgb`.

    Args:
        rgb: (H, W, 3) uint8 array.

    Returns:
        (H, W) uint32 array of segment ids.
    """
    rgb = np.asarray(rgb).astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


# ----------------------------------------------------------------------------------------------
# Reference implementation of pq_compute
# ----------------------------------------------------------------------------------------------


@dataclass
class _CategoryStat:
    """Accumulated matching statistics of one category over the dataset."""

    iou: float = 0.0  # sum of the IoUs of the true positives
    tp: int = 0
    fp: int = 0
    fn: int = 0


def _load_json(obj: JsonLike) -> Dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    with PathManager.open(os.fspath(obj), "r") as f:
        return json.load(f)


def _default_folder(json_path: JsonLike, folder: Optional[str]) -> str:
    # panopticapi's convention: the PNG folder is the json path without ".json".
    if folder is not None:
        return folder
    if isinstance(json_path, dict):
        raise ValueError("A PNG folder is required when the json is given as a dict.")
    return os.path.splitext(os.fspath(json_path))[0]


def _read_id_map(folder: str, file_name: str) -> np.ndarray:
    with PathManager.open(os.path.join(folder, file_name), "rb") as f:
        return rgb2id(np.array(Image.open(f).convert("RGB")))


def _accumulate_image(
    gt_ann: Dict[str, Any],
    pred_ann: Dict[str, Any],
    gt_folder: str,
    pred_folder: str,
    categories: Dict[int, Dict[str, Any]],
    stats: Dict[int, _CategoryStat],
) -> None:
    """Match the segments of one image and add TP/FP/FN/IoU to ``stats`` (panopticapi rules)."""
    image_id = gt_ann["image_id"]
    pan_gt = _read_id_map(gt_folder, gt_ann["file_name"])
    pan_pred = _read_id_map(pred_folder, pred_ann["file_name"])
    if pan_gt.shape != pan_pred.shape:
        raise ValueError(
            f"Image {image_id}: gt PNG has size {pan_gt.shape}, prediction {pan_pred.shape}."
        )

    gt_segms = {int(s["id"]): dict(s) for s in gt_ann["segments_info"]}
    pred_segms = {int(s["id"]): dict(s) for s in pred_ann["segments_info"]}
    for segm in gt_segms.values():
        if "area" not in segm:
            # panopticapi requires "area" in the gt json; hotcoco counts it on the PNG instead.
            segm["area"] = int((pan_gt == segm["id"]).sum())

    # Predicted areas come from the PNG; PNG and json must list the same segments.
    unseen_pred_ids = set(pred_segms)
    for label, count in zip(*np.unique(pan_pred, return_counts=True)):
        label = int(label)
        if label not in pred_segms:
            if label == VOID:
                continue
            raise ValueError(f"Image {image_id}: segment {label} is in the PNG but not the json.")
        pred_segms[label]["area"] = int(count)
        unseen_pred_ids.discard(label)
        if pred_segms[label]["category_id"] not in categories:
            raise ValueError(
                f"Image {image_id}: segment {label} has unknown category "
                f"{pred_segms[label]['category_id']}."
            )
    if unseen_pred_ids:
        raise ValueError(
            f"Image {image_id}: segments {sorted(unseen_pred_ids)} are in the json but not the PNG."
        )

    # Intersection of every (gt id, pred id) pair present in the image.
    pair_keys, pair_counts = np.unique(
        pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64), return_counts=True
    )
    intersections: Dict[Tuple[int, int], int] = {
        (int(k // OFFSET), int(k % OFFSET)): int(c) for k, c in zip(pair_keys, pair_counts)
    }

    gt_matched, pred_matched = set(), set()
    for (gt_id, pred_id), inter in intersections.items():
        if gt_id not in gt_segms or pred_id not in pred_segms:
            continue
        gt_segm, pred_segm = gt_segms[gt_id], pred_segms[pred_id]
        if gt_segm.get("iscrowd", 0) == 1 or gt_segm["category_id"] != pred_segm["category_id"]:
            continue
        # Predicted pixels on VOID are neither right nor wrong: leave them out of the union.
        union = (
            pred_segm["area"] + gt_segm["area"] - inter - intersections.get((VOID, pred_id), 0)
        )
        iou = inter / union
        if iou > 0.5:
            stat = stats[gt_segm["category_id"]]
            stat.tp += 1
            stat.iou += iou
            gt_matched.add(gt_id)
            pred_matched.add(pred_id)

    crowd_by_category: Dict[int, int] = {}
    for gt_id, gt_segm in gt_segms.items():
        if gt_id in gt_matched:
            continue
        if gt_segm.get("iscrowd", 0) == 1:
            crowd_by_category[gt_segm["category_id"]] = gt_id
            continue
        stats[gt_segm["category_id"]].fn += 1

    for pred_id, pred_segm in pred_segms.items():
        if pred_id in pred_matched:
            continue
        ignored = intersections.get((VOID, pred_id), 0)
        crowd_id = crowd_by_category.get(pred_segm["category_id"])
        if crowd_id is not None:
            ignored += intersections.get((crowd_id, pred_id), 0)
        # Mostly on VOID / same-category crowd: the prediction is not penalised.
        if ignored / pred_segm["area"] > 0.5:
            continue
        stats[pred_segm["category_id"]].fp += 1


def _average(
    stats: Dict[int, _CategoryStat],
    categories: Dict[int, Dict[str, Any]],
    isthing: Optional[bool],
) -> Tuple[Dict[str, float], Dict[int, Dict[str, float]]]:
    """
    Average PQ/SQ/RQ over the categories of one split (``isthing=None``: all categories).
    Undefined values are -1.0 (as hotcoco reports them; panopticapi prints 0.0 for an empty
    category and divides by zero for an empty split).
    """
    per_class: Dict[int, Dict[str, float]] = {}
    for cat_id, cat in categories.items():
        if isthing is not None and (cat.get("isthing", 0) == 1) != isthing:
            continue
        s = stats[cat_id]
        entry = {"pq": -1.0, "sq": -1.0, "rq": -1.0}
        entry.update(iou=s.iou, tp=s.tp, fp=s.fp, fn=s.fn)
        denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
        if denominator > 0:
            entry["pq"] = s.iou / denominator
            entry["sq"] = s.iou / s.tp if s.tp > 0 else 0.0
            entry["rq"] = s.tp / denominator
        per_class[cat_id] = entry
    defined = [e for e in per_class.values() if e["tp"] + e["fp"] + e["fn"] > 0]
    n = len(defined)
    if n == 0:
        return {"pq": -1.0, "sq": -1.0, "rq": -1.0, "n": 0}, per_class
    mean = {k: sum(e[k] for e in defined) / n for k in ("pq", "sq", "rq")}
    mean["n"] = n
    return mean, per_class


def pq_compute_reference(
    gt_json: JsonLike,
    gt_folder: Optional[str],
    pred_json: JsonLike,
    pred_folder: Optional[str],
    categories: Optional[Union[Sequence[Dict[str, Any]], Dict[int, Dict[str, Any]]]] = None,
) -> Dict[str, Any]:
    """
    Compute panoptic quality the way ``panopticapi.evaluation.pq_compute`` does (see the module
    docstring for the protocol). Slow but plain; meant for tests and small datasets.

    Args:
        gt_json, pred_json: COCO panoptic json (path or loaded dict): "annotations" is a list of
            ``{"image_id", "file_name", "segments_info": [{"id", "category_id", "iscrowd"
            (gt only, default 0), "area" (gt only; counted on the PNG if absent)}]}``.
            Predictions are paired with ground truth by ``image_id``.
        gt_folder, pred_folder: folders holding the PNGs named by each annotation's
            ``file_name``. ``None``: the json path without ".json" (panopticapi's default).
        categories: the categories to score, each ``{"id", "isthing" (0/1), ...}``, as a list or
            a dict keyed by id. Default: ``gt_json["categories"]``.

    Returns:
        ``{"All" | "Things" | "Stuff": {"pq", "sq", "rq" (fractions in [0, 1]), "n"}, "per_class":
        {category_id: {"pq", "sq", "rq", "iou" (sum over matches), "tp", "fp", "fn"}}}``.
        Scores that are undefined (no segment in a category / no category in a split) are -1.0.
    """
    gt_folder = _default_folder(gt_json, gt_folder)
    pred_folder = _default_folder(pred_json, pred_folder)
    gt_data, pred_data = _load_json(gt_json), _load_json(pred_json)
    if categories is None:
        categories = gt_data["categories"]
    if not isinstance(categories, dict):
        categories = {int(c["id"]): c for c in categories}

    pred_by_image = {ann["image_id"]: ann for ann in pred_data["annotations"]}
    stats = {cat_id: _CategoryStat() for cat_id in categories}
    for gt_ann in gt_data["annotations"]:
        pred_ann = pred_by_image.get(gt_ann["image_id"])
        if pred_ann is None:
            raise ValueError(f"No prediction for the image with id {gt_ann['image_id']}.")
        _accumulate_image(gt_ann, pred_ann, gt_folder, pred_folder, categories, stats)

    results: Dict[str, Any] = {}
    for name, isthing in _SPLITS:
        results[name], per_class = _average(stats, categories, isthing)
        if isthing is None:
            results["per_class"] = per_class
    return results


def pq_compute(
    gt_json: str, gt_folder: str, pred_json: str, pred_folder: str, backend: str = "hotcoco"
) -> Dict[str, Any]:
    """
    Panoptic quality of the predictions in ``pred_json`` / ``pred_folder`` (COCO panoptic
    format, see :func:`pq_compute_reference` for the arguments and the returned dict) with the
    chosen backend: "hotcoco" or "reference".
    """
    if backend == "hotcoco":
        return _pq_compute_hotcoco(gt_json, gt_folder, pred_json, pred_folder)
    if backend == "reference":
        return pq_compute_reference(gt_json, gt_folder, pred_json, pred_folder)
    raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}.")


def _pq_compute_hotcoco(
    gt_json: str, gt_folder: str, pred_json: str, pred_folder: str
) -> Dict[str, Any]:
    """``hotcoco.panoptic`` with panopticapi's protocol; same return format as the reference."""
    try:
        from hotcoco.panoptic import PanopticEval
    except ImportError as e:
        raise ImportError(
            "COCOPanopticEvaluator(backend='hotcoco') needs hotcoco: `pip install hotcoco`."
        ) from e
    # PanopticEval.evaluate() only computes; pq_compute() would also print a table to stdout.
    panoptic_eval = PanopticEval(gt_json, pred_json, gt_folder=gt_folder, pred_folder=pred_folder)
    panoptic_eval.evaluate()
    deviations = panoptic_eval.reference_deviations()
    if deviations:
        logger.warning("hotcoco PQ is not comparable to panopticapi: " + "; ".join(deviations))
    return panoptic_eval.results()


# ----------------------------------------------------------------------------------------------
# Evaluator
# ----------------------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    # segments_info produced by models may hold numpy / torch scalars.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class COCOPanopticEvaluator(DatasetEvaluator):
    """
    Evaluate panoptic quality (PQ, SQ, RQ for all / thing / stuff categories) on a dataset in
    COCO panoptic format. Same interface as Detectron2's ``COCOPanopticEvaluator`` but without
    ``panopticapi``. The dataset's metadata must have ``panoptic_json``, ``panoptic_root``,
    ``thing_dataset_id_to_contiguous_id``, ``stuff_dataset_id_to_contiguous_id`` and, for
    models that return ``segments_info=None``, ``label_divisor``.

    Predictions are kept in memory as PNG bytes and written, with a ``predictions.json`` in
    COCO panoptic format, to a temporary folder (the json goes to ``output_dir`` if given).

    It contains a synchronize call and has to be called from all workers.
    """

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, *, backend: str = "hotcoco"
    ):
        """
        Args:
            dataset_name: name of the dataset in ``MetadataCatalog``.
            output_dir: where to save ``predictions.json``; None: not saved.
            backend: "hotcoco" (``hotcoco.panoptic``, panopticapi-equivalent and fast) or
                "reference" (:func:`pq_compute_reference`, plain NumPy).
        """
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}.")
        if backend == "hotcoco" and importlib.util.find_spec("hotcoco") is None:
            # Fail at construction, not after a full inference pass.
            raise ImportError(
                "COCOPanopticEvaluator(backend='hotcoco') needs hotcoco: `pip install hotcoco`."
            )
        self._backend = backend
        self._metadata = MetadataCatalog.get(dataset_name)
        self._thing_contiguous_id_to_dataset_id = {
            v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()
        }
        self._stuff_contiguous_id_to_dataset_id = {
            v: k for k, v in self._metadata.stuff_dataset_id_to_contiguous_id.items()
        }
        self._output_dir = output_dir
        if self._output_dir is not None:
            PathManager.mkdirs(self._output_dir)
        self._predictions: List[Dict[str, Any]] = []

    def reset(self) -> None:
        self._predictions = []

    def _convert_category_id(self, segment_info: Dict[str, Any]) -> Dict[str, Any]:
        """Contiguous id -> dataset id, chosen by ``isthing``; without ``isthing`` the model
        already gave dataset ids. Returns a new dict without ``isthing``."""
        segment_info = dict(segment_info)
        isthing = segment_info.pop("isthing", None)
        if isthing is None:
            return segment_info
        reverse_map = (
            self._thing_contiguous_id_to_dataset_id
            if isthing
            else self._stuff_contiguous_id_to_dataset_id
        )
        segment_info["category_id"] = reverse_map[int(segment_info["category_id"])]
        return segment_info

    def _segments_from_label_map(self, panoptic_img: np.ndarray) -> List[Dict[str, Any]]:
        """
        Segments of a map holding ``contiguous_category_id * label_divisor + instance_id`` per
        pixel and -1 for VOID. Their ids are the label + 1, because the PNG format uses 0 for
        VOID; the caller shifts the map accordingly.
        """
        label_divisor = self._metadata.label_divisor
        thing_ids = set(self._metadata.thing_dataset_id_to_contiguous_id.values())
        segments_info = []
        for panoptic_label in np.unique(panoptic_img):
            if panoptic_label == -1:
                continue
            pred_class = int(panoptic_label) // label_divisor
            segments_info.append(
                {
                    "id": int(panoptic_label) + 1,
                    "category_id": pred_class,
                    "isthing": pred_class in thing_ids,
                }
            )
        return segments_info

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """
        Args:
            inputs: per-image dicts with "image_id" and "file_name".
            outputs: per-image dicts with "panoptic_seg": ``(pan_seg, segments_info)``, where
                ``pan_seg`` is an (H, W) integer tensor of segment ids (0 = VOID) and
                ``segments_info`` a list of ``{"id", "category_id", "isthing", ...}`` with
                contiguous category ids (or dataset ids when "isthing" is absent). If
                ``segments_info`` is None, ``pan_seg`` holds
                ``category_id * label_divisor + instance_id`` and -1 for VOID.
        """
        for input, output in zip(inputs, outputs):
            panoptic_img, segments_info = output["panoptic_seg"]
            panoptic_img = panoptic_img.cpu().numpy().astype(np.int64)
            if segments_info is None:
                segments_info = self._segments_from_label_map(panoptic_img)
                panoptic_img = panoptic_img + 1

            file_name = os.path.basename(input["file_name"])
            file_name_png = os.path.splitext(file_name)[0] + ".png"
            with io.BytesIO() as out:
                Image.fromarray(id2rgb(panoptic_img)).save(out, format="PNG")
                png_string = out.getvalue()
            self._predictions.append(
                {
                    "image_id": input["image_id"],
                    "file_name": file_name_png,
                    "png_string": png_string,
                    "segments_info": [self._convert_category_id(s) for s in segments_info],
                }
            )

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        """
        Returns:
            On the main process ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th",
            "PQ_st", "SQ_st", "RQ_st"}}`` in percent (NaN for a split without categories);
            None on other processes.
        """
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None

        # Both backends read local files.
        gt_json = PathManager.get_local_path(self._metadata.panoptic_json)
        gt_folder = PathManager.get_local_path(self._metadata.panoptic_root)

        with tempfile.TemporaryDirectory(prefix="panoptic_eval") as pred_dir:
            logger.info(f"Writing all panoptic predictions to {pred_dir} ...")
            annotations = []
            for p in predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p["png_string"])
                annotations.append({k: v for k, v in p.items() if k != "png_string"})

            with open(gt_json, "r") as f:
                json_data = json.load(f)
            json_data["annotations"] = annotations

            output_dir = self._output_dir or pred_dir
            predictions_json = os.path.join(output_dir, "predictions.json")
            with PathManager.open(predictions_json, "w") as f:
                f.write(json.dumps(json_data, default=_json_default))
            predictions_json = PathManager.get_local_path(predictions_json)

            pq_res = pq_compute(gt_json, gt_folder, predictions_json, pred_dir, self._backend)

        res = {}
        for split, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for metric in ("pq", "sq", "rq"):
                # A split without categories has no score (-1 from the backends).
                value = pq_res[split][metric] if pq_res[split]["n"] > 0 else float("nan")
                res[metric.upper() + suffix] = 100 * value
        _log_panoptic_results(pq_res)
        return OrderedDict({"panoptic_seg": res})


def _log_panoptic_results(pq_res: Dict[str, Any]) -> None:
    headers = ["", "PQ", "SQ", "RQ", "#categories"]
    data = []
    for name, _ in _SPLITS:
        scores = [
            pq_res[name][k] * 100 if pq_res[name]["n"] > 0 else float("nan")
            for k in ("pq", "sq", "rq")
        ]
        data.append([name] + scores + [pq_res[name]["n"]])
    table = tabulate(
        data, headers=headers, tablefmt="pipe", floatfmt=".3f", stralign="center", numalign="center"
    )
    logger.info("Panoptic Evaluation Results:\n" + table)
