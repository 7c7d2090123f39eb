"""Large-scale-jitter training mapper for COCO instance segmentation (Mask2Former's
``COCOInstanceNewBaselineDatasetMapper``)."""
from typing import Dict

import numpy as np
import torch

from detectron2.data import detection_utils as utils

from . import register_mapper
from .mapper_utils import LSJMapperBase, image_to_tensor, rasterize_polygons

__all__ = ["COCOInstanceLSJDatasetMapper"]


@register_mapper("coco_instance_lsj")
class COCOInstanceLSJDatasetMapper(LSJMapperBase):
    """
    Maps a COCO instance dataset dict (Detectron2 format: "file_name", "height", "width",
    "annotations" with "bbox", "bbox_mode", contiguous "category_id", "segmentation" as
    **polygons**, optional "iscrowd") to Mask2Former's training input.

    Augmentation: flip (``INPUT.RANDOM_FLIP``) → ``ResizeScale(INPUT.MIN_SCALE, INPUT.MAX_SCALE)`` →
    ``FixedSizeCrop(INPUT.IMAGE_SIZE)`` padded with 128 (see :func:`build_lsj_augmentation`).
    Crowd annotations are dropped; the polygons are transformed (clipped by the crop), the boxes
    recomputed from them, instances with an empty box (side <= 1e-5) dropped.

    Output keys added to (a copy of) the dict ("annotations" is removed):

    * "image": uint8 tensor (3, S, S), S = ``INPUT.IMAGE_SIZE``, channels in ``INPUT.FORMAT`` order;
    * "padding_mask": bool tensor (S, S), True on pixels added by the padding (unused by the model);
    * "instances": :class:`Instances` of size (S, S) with ``gt_classes`` (int64), ``gt_boxes``
      (XYXY absolute, tight boxes of the transformed polygons) and ``gt_masks`` (**uint8** 0/1
      (N, S, S), the polygons rasterised with pycocotools at the final size).
    """

    def _map(self, dataset_dict: Dict) -> Dict:
        file_name = dataset_dict["file_name"]
        image = self._read_image(dataset_dict)
        # Padding is found by pushing an all-ones map through the same transforms:
        # FixedSizeCrop pads segmentation maps with 0.
        valid = np.ones(image.shape[:2], dtype=np.uint8)
        image, _, transforms = self._augment(image)
        image_shape = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["padding_mask"] = torch.as_tensor(transforms.apply_segmentation(valid) == 0)

        annos = []
        for obj in dataset_dict.pop("annotations", []):
            if obj.get("iscrowd", 0):
                continue
            if not isinstance(obj.get("segmentation"), list):
                raise ValueError(
                    f"{type(self).__name__} needs polygon segmentations; image {file_name} has an "
                    f"annotation with {type(obj.get('segmentation')).__name__}."
                )
            obj.pop("keypoints", None)
            annos.append(utils.transform_instance_annotations(obj, transforms, image_shape))

        instances = utils.annotations_to_instances(annos, image_shape, mask_format="polygon")
        if annos:
            # Cropping clips polygons, so the transformed annotation box may no longer be tight.
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
            instances = utils.filter_empty_instances(instances)
        # (annotations_to_instances sets no gt_masks when there is no annotation)
        polygons = instances.gt_masks.polygons if instances.has("gt_masks") else []
        h, w = image_shape
        masks = [rasterize_polygons(p, h, w) for p in polygons]
        instances.gt_masks = (
            torch.as_tensor(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        )
        dataset_dict["instances"] = instances
        return dataset_dict
