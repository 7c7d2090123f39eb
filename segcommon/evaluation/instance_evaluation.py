"""
COCO instance-segmentation AP for datasets whose thing classes are not the first contiguous ids.

Detectron2's ``COCOEvaluator`` asserts that the contiguous ids of
``thing_dataset_id_to_contiguous_id`` are exactly ``0..n-1``. In panoptic datasets such as
ADE20K-panoptic the model's class space holds things and stuff interleaved, so the thing
classes have contiguous ids like ``{1, 3, 7, ...}``. :class:`InstanceSegEvaluator` (the
Mask2Former variant) maps predictions back through the thing map whatever its values are.
"""
import itertools
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from detectron2.utils.file_io import PathManager

__all__ = ["InstanceSegEvaluator"]


class InstanceSegEvaluator(COCOEvaluator):
    """
    ``COCOEvaluator`` whose predicted ``category_id`` (a contiguous id of the model) is mapped to
    the dataset id with the inverse of ``metadata.thing_dataset_id_to_contiguous_id``, which may
    have any contiguous values. Every predicted class must be a thing class. Everything else
    (``coco_instances_results.json`` dump, COCOeval, ``max_dets_per_image``, results in percent)
    is ``COCOEvaluator``'s.
    """

    def _eval_predictions(
        self, predictions: List[Dict[str, Any]], img_ids: Optional[Sequence[int]] = None
    ) -> None:
        """
        Evaluate predictions and fill ``self._results`` with the metrics of each task.

        Args:
            predictions: per-image ``{"image_id", "instances": [COCO-format result dicts with a
                contiguous "category_id"]}`` as built by ``COCOEvaluator.process``.
            img_ids: image ids to evaluate on; None: the whole dataset.
        """
        self._logger.info("Preparing results for COCO format ...")
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            dataset_id_to_contiguous_id = self._metadata.thing_dataset_id_to_contiguous_id
            reverse_id_mapping = {v: k for k, v in dataset_id_to_contiguous_id.items()}
            for result in coco_results:
                category_id = result["category_id"]
                # A stuff class here would silently be scored against the wrong category.
                assert category_id in reverse_id_mapping, (
                    f"A prediction has class={category_id}, but the thing classes of the dataset "
                    f"have contiguous ids {sorted(reverse_id_mapping)}."
                )
                result["category_id"] = reverse_id_mapping[category_id]

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
                f.flush()

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info(
            "Evaluating predictions with {} COCO API...".format(
                "unofficial" if self._use_fast_impl else "official"
            )
        )
        for task in sorted(tasks):
            assert task in {"bbox", "segm", "keypoints"}, f"Got unknown task: {task}!"
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    use_fast_impl=self._use_fast_impl,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if len(coco_results) > 0
                else None  # COCOeval does not handle empty results
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )
