"""
Tests of ``InstanceSegEvaluator`` on a tiny COCO instances json with interleaved thing category
ids (dataset ids 3 and 7), fed its own ground truth as predictions.
"""
import json
import uuid
from typing import Dict, List, Tuple

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BitMasks, Instances

from segcommon.evaluation import InstanceSegEvaluator

# Dataset category ids of the two thing classes.
CAT_A, CAT_B = 3, 7
SIZE = 16

# Per image: list of (dataset category id, (y0, y1, x0, x1)) boxes painted as masks.
OBJECTS: Dict[int, List[Tuple[int, Tuple[int, int, int, int]]]] = {
    1: [(CAT_A, (0, 6, 0, 6)), (CAT_B, (8, 16, 4, 12))],
    2: [(CAT_B, (2, 10, 2, 14)), (CAT_A, (10, 15, 0, 5)), (CAT_A, (11, 16, 9, 16))],
}


def rect_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_coco_json(path: str) -> None:
    images, annotations = [], []
    for image_id, objects in OBJECTS.items():
        images.append(
            {"id": image_id, "file_name": f"{image_id}.jpg", "height": SIZE, "width": SIZE}
        )
        for cat, (y0, y1, x0, x1) in objects:
            rle = mask_util.encode(np.asfortranarray(rect_mask(y0, y1, x0, x1)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": rle,
                    "area": (y1 - y0) * (x1 - x0),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": CAT_A, "name": "a"}, {"id": CAT_B, "name": "b"}]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


@pytest.fixture
def register(tmp_path):
    """Register the tiny dataset with a given thing map; returns its name."""
    json_file = str(tmp_path / "instances.json")
    write_coco_json(json_file)
    names = []

    def _register(thing_dataset_id_to_contiguous_id: Dict[int, int]) -> str:
        name = f"_test_instances_{uuid.uuid4().hex}"
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(
            json_file=json_file,
            thing_classes=["a", "b"],
            thing_dataset_id_to_contiguous_id=thing_dataset_id_to_contiguous_id,
        )
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def ground_truth_outputs(contiguous: Dict[int, int]) -> List[Tuple[Dict, Dict]]:
    """(input, output) pairs whose predicted instances are the ground truth."""
    pairs = []
    for image_id, objects in OBJECTS.items():
        masks = torch.as_tensor(np.stack([rect_mask(*box) for _, box in objects]))
        instances = Instances((SIZE, SIZE))
        instances.pred_masks = masks
        instances.pred_boxes = BitMasks(masks).get_bounding_boxes()
        instances.scores = torch.ones(len(objects))
        instances.pred_classes = torch.tensor([contiguous[cat] for cat, _ in objects])
        pairs.append(({"image_id": image_id}, {"instances": instances}))
    return pairs


def evaluate(evaluator: COCOEvaluator, pairs) -> Dict:
    evaluator.reset()
    for inputs, outputs in pairs:
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()


@pytest.mark.parametrize(
    "contiguous",
    [
        {CAT_A: 0, CAT_B: 1},
        # ADE20K-panoptic style: thing slots among stuff classes, not 0..n-1.
        {CAT_A: 1, CAT_B: 3},
    ],
)
def test_ground_truth_gives_ap_100(register, tmp_path, contiguous):
    name = register(contiguous)
    evaluator = InstanceSegEvaluator(name, tasks=("segm",), output_dir=str(tmp_path / "out"))
    results = evaluate(evaluator, ground_truth_outputs(contiguous))
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP-a"] == pytest.approx(100.0)
    assert results["segm"]["AP-b"] == pytest.approx(100.0)
    # The dumped results carry dataset ids again.
    with open(tmp_path / "out" / "coco_instances_results.json") as f:
        dumped = json.load(f)
    assert sorted({r["category_id"] for r in dumped}) == [CAT_A, CAT_B]


def test_detectron2_evaluator_rejects_non_contiguous_things(register):
    # The reason this class exists.
    contiguous = {CAT_A: 1, CAT_B: 3}
    evaluator = COCOEvaluator(register(contiguous), tasks=("segm",))
    with pytest.raises(AssertionError):
        evaluate(evaluator, ground_truth_outputs(contiguous))


def test_stuff_class_prediction_is_rejected(register):
    contiguous = {CAT_A: 1, CAT_B: 3}
    evaluator = InstanceSegEvaluator(register(contiguous), tasks=("segm",))
    pairs = ground_truth_outputs(contiguous)
    pairs[0][1]["instances"].pred_classes[0] = 2  # a stuff slot
    with pytest.raises(AssertionError, match="class=2"):
        evaluate(evaluator, pairs)
