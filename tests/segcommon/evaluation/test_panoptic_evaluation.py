"""
Tests of panoptic quality: hand-computed cases for both backends (hotcoco and our reference
implementation), random cross-checks between them, and an end-to-end run of
``COCOPanopticEvaluator`` on a tiny dataset registered in ``MetadataCatalog``.

Maps are small (8x8) segment-id arrays; 0 is VOID. Categories (dataset ids, interleaved the
Mask2Former way, contiguous id = position in the list):
    1 person (thing), 3 sky (stuff), 7 car (thing), 9 grass (stuff).
"""
import importlib.util
import json
import os
import uuid
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from segcommon.evaluation import COCOPanopticEvaluator, pq_compute, pq_compute_reference
from segcommon.evaluation.panoptic_evaluation import id2rgb, rgb2id

PERSON, SKY, CAR, GRASS = 1, 3, 7, 9
CATEGORIES = [
    {"id": PERSON, "name": "person", "isthing": 1},
    {"id": SKY, "name": "sky", "isthing": 0},
    {"id": CAR, "name": "car", "isthing": 1},
    {"id": GRASS, "name": "grass", "isthing": 0},
]
BACKENDS = ["hotcoco", "reference"]

# A segment: (segment id, dataset category id, iscrowd).
Segment = Tuple[int, int, int]
# An image: (image id, (H, W) segment-id map, segments).
ImageSpec = Tuple[int, np.ndarray, Sequence[Segment]]


def write_panoptic(root: str, name: str, images: Sequence[ImageSpec]) -> Tuple[str, str]:
    """Write ``root/name.json`` and PNGs in ``root/name/``; areas are counted on the maps."""
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    json_images, annotations = [], []
    for image_id, id_map, segments in images:
        file_name = f"{image_id:06d}.png"
        Image.fromarray(id2rgb(id_map)).save(os.path.join(folder, file_name))
        json_images.append(
            {"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": id_map.shape[0],
             "width": id_map.shape[1]}
        )
        segments_info = [
            {"id": sid, "category_id": cat, "iscrowd": crowd, "area": int((id_map == sid).sum())}
            for sid, cat, crowd in segments
        ]
        annotations.append(
            {"image_id": image_id, "file_name": file_name, "segments_info": segments_info}
        )
    json_path = os.path.join(root, name + ".json")
    with open(json_path, "w") as f:
        json.dump({"images": json_images, "annotations": annotations, "categories": CATEGORIES}, f)
    return json_path, folder


def compute(tmp_path, backend: str, gt: Sequence[ImageSpec], pred: Sequence[ImageSpec]) -> Dict:
    gt_json, gt_folder = write_panoptic(str(tmp_path), "gt", gt)
    pred_json, pred_folder = write_panoptic(str(tmp_path), "pred", pred)
    return pq_compute(gt_json, gt_folder, pred_json, pred_folder, backend=backend)


def assert_split(res: Dict, split: str, pq: float, sq: float, rq: float, n: int) -> None:
    got = res[split]
    assert got["n"] == n, (split, got)
    assert got["pq"] == pytest.approx(pq, abs=1e-9), (split, got)
    assert got["sq"] == pytest.approx(sq, abs=1e-9), (split, got)
    assert got["rq"] == pytest.approx(rq, abs=1e-9), (split, got)


def scene() -> Tuple[np.ndarray, List[Segment]]:
    """8x8: person rows 0-1 (16 px), car rows 2-3 left (8 px), sky rows 2-3 right + rows 4-5
    (24 px), grass rows 6-7 (16 px)."""
    m = np.zeros((8, 8), np.int64)
    m[0:2] = 1
    m[2:4, 0:4] = 2
    m[2:4, 4:8] = 3
    m[4:6] = 3
    m[6:8] = 4
    return m, [(1, PERSON, 0), (2, CAR, 0), (3, SKY, 0), (4, GRASS, 0)]


def test_id_rgb_roundtrip():
    ids = np.array([[0, 1, 255], [256, 65535, 256**3 - 1]])
    np.testing.assert_array_equal(rgb2id(id2rgb(ids)), ids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_prediction(tmp_path, backend):
    m, segs = scene()
    # Renumbered prediction ids: matching must not depend on them.
    pred_map = np.where(m > 0, m + 10, 0)
    pred_segs = [(sid + 10, cat, 0) for sid, cat, _ in segs]
    res = compute(tmp_path, backend, [(1, m, segs)], [(1, pred_map, pred_segs)])
    assert_split(res, "All", 1, 1, 1, 4)
    assert_split(res, "Things", 1, 1, 1, 2)
    assert_split(res, "Stuff", 1, 1, 1, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_thing_missed(tmp_path, backend):
    # Two persons (rows 0-1 and rows 2-3 left) and sky; the second person is predicted VOID.
    gt = np.full((8, 8), 3)
    gt[0:2] = 1
    gt[2:4, 0:4] = 2
    pred = gt.copy()
    pred[pred == 2] = 0
    res = compute(
        tmp_path, backend,
        [(1, gt, [(1, PERSON, 0), (2, PERSON, 0), (3, SKY, 0)])],
        [(1, pred, [(1, PERSON, 0), (3, SKY, 0)])],
    )
    # person: TP 1 (IoU 1), FN 1 -> PQ = RQ = 1 / (1 + 0.5) = 2/3, SQ = 1. sky: perfect.
    # Car and grass have no segment at all and are not averaged.
    assert_split(res, "Things", 2 / 3, 1, 2 / 3, 1)
    assert_split(res, "Stuff", 1, 1, 1, 1)
    assert_split(res, "All", 5 / 6, 1, 5 / 6, 2)
    assert (res["per_class"][PERSON]["tp"], res["per_class"][PERSON]["fn"]) == (1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pred_pixels,expected", [(8, (0, 0, 0)), (9, (9 / 16, 9 / 16, 1))])
def test_iou_threshold_is_strict(tmp_path, backend, pred_pixels, expected):
    # gt person: the 4x4 block at the top left (16 px); everything else VOID in both maps.
    gt = np.zeros((8, 8), np.int64)
    gt[0:4, 0:4] = 1
    pred = np.zeros((8, 8), np.int64)
    pred.reshape(-1)[np.flatnonzero(gt.reshape(-1))[:pred_pixels]] = 1
    res = compute(tmp_path, backend, [(1, gt, [(1, PERSON, 0)])], [(1, pred, [(1, PERSON, 0)])])
    # IoU = pred_pixels / 16: 8/16 = 0.5 is no match (FN + FP: PQ = SQ = RQ = 0);
    # 9/16 > 0.5 matches (TP: PQ = SQ = 9/16, RQ = 1).
    assert_split(res, "All", *expected, n=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_void_pixels_leave_the_union(tmp_path, backend):
    # Predicted person = gt person (16 px) + 16 px on VOID: union = 32 + 16 - 16 - 16 = 16.
    gt = np.zeros((8, 8), np.int64)
    gt[0:4, 0:4] = 1
    pred = np.zeros((8, 8), np.int64)
    pred[0:4] = 1
    res = compute(tmp_path, backend, [(1, gt, [(1, PERSON, 0)])], [(1, pred, [(1, PERSON, 0)])])
    assert_split(res, "All", 1, 1, 1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pixels_on_void", [5, 4])
def test_false_positive_on_void(tmp_path, backend, pixels_on_void):
    # gt: person top-left 4x4 (16), VOID top-right 4x4 (16), sky bottom half (32).
    gt = np.zeros((8, 8), np.int64)
    gt[0:4, 0:4] = 1
    gt[4:8] = 3
    # pred: exact person; a car of 8 px with `pixels_on_void` on VOID, the rest taken from sky.
    pred = gt.copy()
    pred.reshape(-1)[np.flatnonzero(gt.reshape(-1) == 0)[:pixels_on_void]] = 5
    pred.reshape(-1)[np.flatnonzero(gt.reshape(-1) == 3)[: 8 - pixels_on_void]] = 5
    res = compute(
        tmp_path, backend,
        [(1, gt, [(1, PERSON, 0), (3, SKY, 0)])],
        [(1, pred, [(1, PERSON, 0), (3, SKY, 0), (5, CAR, 0)])],
    )
    sky_iou = (32 - (8 - pixels_on_void)) / 32
    if pixels_on_void == 5:
        # 5/8 of the car lies on VOID: ignored, so car is not even averaged.
        assert_split(res, "Things", 1, 1, 1, 1)
        assert_split(res, "Stuff", sky_iou, sky_iou, 1, 1)
        assert_split(res, "All", (1 + sky_iou) / 2, (1 + sky_iou) / 2, 1, 2)
    else:
        # Exactly half on VOID is not "more than half": a car FP, car PQ = SQ = RQ = 0.
        assert_split(res, "Things", 0.5, 0.5, 0.5, 2)
        assert_split(res, "Stuff", sky_iou, sky_iou, 1, 1)
        assert_split(res, "All", (1 + sky_iou) / 3, (1 + sky_iou) / 3, 2 / 3, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("crowd_pred_category", [PERSON, CAR])
def test_crowd_region(tmp_path, backend, crowd_pred_category):
    # gt: a person crowd (top-left 4x4), a person (top-right 4x4), sky (bottom half).
    gt = np.full((8, 8), 3)
    gt[0:4, 0:4] = 1
    gt[0:4, 4:8] = 2
    # The prediction copies the map; the crowd area becomes one predicted segment.
    pred = gt.copy()
    res = compute(
        tmp_path, backend,
        [(1, gt, [(1, PERSON, 1), (2, PERSON, 0), (3, SKY, 0)])],
        [(1, pred, [(1, crowd_pred_category, 0), (2, PERSON, 0), (3, SKY, 0)])],
    )
    # The crowd is never a FN, and a person predicted on it is ignored (never matched either).
    assert res["per_class"][PERSON]["fn"] == 0
    assert res["per_class"][PERSON]["tp"] == 1
    if crowd_pred_category == PERSON:
        assert_split(res, "Things", 1, 1, 1, 1)
        assert_split(res, "All", 1, 1, 1, 2)
    else:
        # A crowd only excuses predictions of its own category: the car is a FP.
        assert res["per_class"][CAR]["fp"] == 1
        assert_split(res, "Things", 0.5, 0.5, 0.5, 2)
        assert_split(res, "All", 2 / 3, 2 / 3, 2 / 3, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_last_crowd_of_a_category_excuses(tmp_path, backend):
    # panopticapi keeps one crowd region per category and image: the last one listed. A person
    # predicted on the first of two person crowds is therefore a FP (hotcoco does the same).
    gt = np.full((8, 8), 3)
    gt[0:4, 0:4] = 1
    gt[0:4, 4:8] = 2
    pred = np.where(gt == 2, 0, gt)
    res = compute(
        tmp_path, backend,
        [(1, gt, [(1, PERSON, 1), (2, PERSON, 1), (3, SKY, 0)])],
        [(1, pred, [(1, PERSON, 0), (3, SKY, 0)])],
    )
    assert res["per_class"][PERSON]["fp"] == 1
    assert_split(res, "All", 0.5, 0.5, 0.5, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_things_stuff_split(tmp_path, backend):
    # gt: person rows 0-1 (16), sky rows 2-5 (32), grass rows 6-7 (16).
    gt = np.zeros((8, 8), np.int64)
    gt[0:2], gt[2:6], gt[6:8] = 1, 2, 3
    # pred: person exact, sky rows 2-4 (24), grass rows 5-7 (24).
    pred = np.zeros((8, 8), np.int64)
    pred[0:2], pred[2:5], pred[5:8] = 1, 2, 3
    segs = [(1, PERSON, 0), (2, SKY, 0), (3, GRASS, 0)]
    res = compute(tmp_path, backend, [(1, gt, segs)], [(1, pred, segs)])
    # sky IoU 24/32 = 3/4, grass IoU 16/24 = 2/3, both matched.
    st = (3 / 4 + 2 / 3) / 2
    assert_split(res, "Things", 1, 1, 1, 1)
    assert_split(res, "Stuff", st, st, 1, 2)
    assert_split(res, "All", (1 + 3 / 4 + 2 / 3) / 3, (1 + 3 / 4 + 2 / 3) / 3, 1, 3)


def random_case(rng: np.random.Generator, image_id: int) -> Tuple[ImageSpec, ImageSpec]:
    """
    A 16x16 gt made of overlapping rectangles (VOID between them, some crowd) and a prediction
    made from it: renumbered, some segments dropped or relabelled, then random rectangles
    painted as new segments, as growth of existing ones, or as VOID holes.
    """
    cats = [c["id"] for c in CATEGORIES]
    gt = np.zeros((16, 16), np.int64)
    gt_meta: Dict[int, Tuple[int, int]] = {}
    crowd_categories = set()
    for k in range(1, int(rng.integers(3, 9))):
        y0, x0 = rng.integers(0, 12, size=2)
        h, w = rng.integers(2, 9, size=2)
        cat = int(rng.choice(cats))
        # At most one crowd region per category, as in COCO panoptic.
        crowd = int(rng.random() < 0.15 and cat not in crowd_categories)
        if crowd:
            crowd_categories.add(cat)
        gt[y0 : y0 + h, x0 : x0 + w] = k
        gt_meta[k] = (cat, crowd)

    pred = np.where(gt > 0, gt + 100, 0)  # prediction ids differ from gt ids
    pred_meta: Dict[int, int] = {}
    for k, (cat, _) in gt_meta.items():
        r = rng.random()
        if r < 0.15:
            pred[pred == k + 100] = 0  # missed
        pred_meta[k + 100] = int(rng.choice(cats)) if r > 0.85 else cat
    for j in range(int(rng.integers(1, 5))):
        y0, x0 = rng.integers(0, 15, size=2)
        h, w = rng.integers(1, 7, size=2)
        r = rng.random()
        if r < 0.4:
            pid = 200 + j  # a new segment
            pred_meta[pid] = int(rng.choice(cats))
        elif r < 0.8:
            pid = int(rng.choice(list(pred_meta)))  # an existing segment grows
        else:
            pid = 0  # a hole
        pred[y0 : y0 + h, x0 : x0 + w] = pid
    gt_segs = [(k, c, crowd) for k, (c, crowd) in gt_meta.items() if (gt == k).any()]
    pred_segs = [(k, c, 0) for k, c in pred_meta.items() if (pred == k).any()]
    return (image_id, gt, gt_segs), (image_id, pred, pred_segs)


@pytest.mark.parametrize("seed", range(10))
def test_hotcoco_matches_reference_on_random_cases(tmp_path, seed):
    rng = np.random.default_rng(seed)
    cases = [random_case(rng, image_id) for image_id in range(1, 7)]
    gt_json, gt_folder = write_panoptic(str(tmp_path), "gt", [c[0] for c in cases])
    pred_json, pred_folder = write_panoptic(str(tmp_path), "pred", [c[1] for c in cases])
    hot = pq_compute(gt_json, gt_folder, pred_json, pred_folder, backend="hotcoco")
    ref = pq_compute_reference(gt_json, gt_folder, pred_json, pred_folder)
    for split in ("All", "Things", "Stuff"):
        assert hot[split]["n"] == ref[split]["n"], split
        for k in ("pq", "sq", "rq"):
            assert hot[split][k] == pytest.approx(ref[split][k], abs=1e-12), (split, k)
    for cat_id, ref_cat in ref["per_class"].items():
        hot_cat = hot["per_class"][cat_id]
        for k in ("tp", "fp", "fn"):
            assert hot_cat[k] == ref_cat[k], (cat_id, k)
        for k in ("iou", "pq", "sq", "rq"):
            assert hot_cat[k] == pytest.approx(ref_cat[k], abs=1e-12), (cat_id, k)


# ----------------------------------------------------------------------------------------------
# End to end: COCOPanopticEvaluator on a registered dataset
# ----------------------------------------------------------------------------------------------

LABEL_DIVISOR = 1000
CONTIGUOUS = {c["id"]: i for i, c in enumerate(CATEGORIES)}  # 1->0, 3->1, 7->2, 9->3
IS_THING = {c["id"]: bool(c["isthing"]) for c in CATEGORIES}


def e2e_dataset() -> List[ImageSpec]:
    """Image 1: `scene()`. Image 2: two persons (top-left / top-right 4x4) and sky (bottom)."""
    m2 = np.full((8, 8), 3)
    m2[0:4, 0:4] = 1
    m2[0:4, 4:8] = 2
    return [(1, *scene()), (2, m2, [(1, PERSON, 0), (2, PERSON, 0), (3, SKY, 0)])]


@pytest.fixture
def register(tmp_path):
    """Register gt images as a temporary panoptic dataset; returns its name."""
    names = []

    def _register(images: Sequence[ImageSpec]) -> str:
        name = f"_test_panoptic_{uuid.uuid4().hex}"
        gt_json, gt_folder = write_panoptic(str(tmp_path), name, images)
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(
            panoptic_json=gt_json,
            panoptic_root=gt_folder,
            # Mask2Former-style: things keep their slots in the contiguous space and the stuff
            # map covers every category, so only `isthing` tells which map applies.
            thing_dataset_id_to_contiguous_id={k: v for k, v in CONTIGUOUS.items() if IS_THING[k]},
            stuff_dataset_id_to_contiguous_id=dict(CONTIGUOUS),
            label_divisor=LABEL_DIVISOR,
        )
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture
def panoptic_dataset(register):
    images = e2e_dataset()
    return register(images), images


def as_model_output(id_map: np.ndarray, segments: Sequence[Segment]) -> Dict:
    """Model output with contiguous category ids and `isthing`, as Mask2Former returns it."""
    segments_info = [
        {"id": sid, "category_id": CONTIGUOUS[cat], "isthing": IS_THING[cat]}
        for sid, cat, _ in segments
    ]
    return {"panoptic_seg": (torch.as_tensor(id_map, dtype=torch.int32), segments_info)}


def as_label_map_output(id_map: np.ndarray, segments: Sequence[Segment]) -> Dict:
    """Model output with `segments_info=None`: category * label_divisor + instance, -1 = VOID."""
    labels = np.full(id_map.shape, -1, np.int64)
    for instance, (sid, cat, _) in enumerate(segments):
        labels[id_map == sid] = CONTIGUOUS[cat] * LABEL_DIVISOR + instance
    return {"panoptic_seg": (torch.as_tensor(labels, dtype=torch.int32), None)}


def run_evaluator(name, images, outputs, backend, output_dir=None) -> Dict[str, float]:
    evaluator = COCOPanopticEvaluator(name, output_dir=output_dir, backend=backend)
    evaluator.reset()
    for (image_id, _, _), output in zip(images, outputs):
        evaluator.process([{"image_id": image_id, "file_name": f"/x/{image_id:06d}.jpg"}], [output])
    return evaluator.evaluate()["panoptic_seg"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("encode", [as_model_output, as_label_map_output])
def test_evaluator_ground_truth_gives_100(panoptic_dataset, tmp_path, backend, encode):
    name, images = panoptic_dataset
    out_dir = str(tmp_path / "out")
    res = run_evaluator(name, images, [encode(m, s) for _, m, s in images], backend, out_dir)
    assert set(res) == {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}
    for k, v in res.items():
        assert v == pytest.approx(100.0), k
    # The saved predictions carry dataset category ids again.
    with open(os.path.join(out_dir, "predictions.json")) as f:
        saved = json.load(f)
    assert {s["category_id"] for a in saved["annotations"] for s in a["segments_info"]} == {
        PERSON, SKY, CAR, GRASS
    }
    assert all("isthing" not in s for a in saved["annotations"] for s in a["segments_info"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluator_perturbed_prediction(panoptic_dataset, backend):
    name, images = panoptic_dataset
    (id1, m1, s1), (id2, m2, s2) = images
    # Image 2: the second person is missed (VOID) and sky loses its last row (24 of 32 px).
    p2 = m2.copy()
    p2[p2 == 2] = 0
    p2[7] = 0
    outputs = [
        as_model_output(m1, s1),
        as_label_map_output(p2, [(1, PERSON, 0), (3, SKY, 0)]),
    ]
    res = run_evaluator(name, images, outputs, backend)
    # person: TP 2 (IoU 1 each), FN 1 -> PQ = RQ = 2 / 2.5 = 0.8, SQ 1.  car: 1.
    # sky: TP 2, IoU 1 + 0.75 -> PQ = SQ = 0.875, RQ 1.                 grass: 1.
    expected = {
        "PQ_th": 90.0, "SQ_th": 100.0, "RQ_th": 90.0,
        "PQ_st": 93.75, "SQ_st": 93.75, "RQ_st": 100.0,
        "PQ": 100 * (0.8 + 1 + 0.875 + 1) / 4,
        "SQ": 100 * (1 + 1 + 0.875 + 1) / 4,
        "RQ": 100 * (0.8 + 1 + 1 + 1) / 4,
    }
    for k, v in expected.items():
        assert res[k] == pytest.approx(v), k


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluator_empty_split_is_nan(register, backend):
    # Only persons in gt and prediction: no stuff category is averaged (n = 0).
    m = np.zeros((8, 8), np.int64)
    m[0:4, 0:4] = 1
    images = [(1, m, [(1, PERSON, 0)])]
    res = run_evaluator(register(images), images, [as_model_output(m, images[0][2])], backend)
    assert res["PQ"] == pytest.approx(100.0) and res["PQ_th"] == pytest.approx(100.0)
    assert np.isnan(res["PQ_st"]) and np.isnan(res["SQ_st"]) and np.isnan(res["RQ_st"])


def test_missing_hotcoco_raises(panoptic_dataset, monkeypatch):
    name, _ = panoptic_dataset
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "hotcoco" else find_spec(n, *a)
    )
    with pytest.raises(ImportError, match="pip install hotcoco"):
        COCOPanopticEvaluator(name)
    COCOPanopticEvaluator(name, backend="reference")  # needs nothing extra
    with pytest.raises(ValueError):
        COCOPanopticEvaluator(name, backend="panopticapi")
