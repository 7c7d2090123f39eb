"""Large-scale-jitter training mapper for COCO panoptic segmentation (Mask2Former's
``COCOPanopticNewBaselineDatasetMapper``)."""
from typing import Dict

from . import register_mapper
from .mapper_utils import (
    LSJMapperBase,
    image_to_tensor,
    instances_from_panoptic,
    panoptic_rgb_to_ids,
    read_panoptic_png,
)

__all__ = ["COCOPanopticLSJDatasetMapper"]


@register_mapper("coco_panoptic_lsj")
class COCOPanopticLSJDatasetMapper(LSJMapperBase):
    """
    Maps a COCO panoptic dataset dict ("file_name", "height", "width", "pan_seg_file_name",
    "segments_info" with "id", contiguous "category_id", "iscrowd") to Mask2Former's training input.

    Augmentation: as :class:`COCOInstanceLSJDatasetMapper` (see :func:`build_lsj_augmentation`).
    The panoptic PNG gets the same transforms as a segmentation map (nearest; padding 0 = VOID)
    and is decoded to segment ids (``R + 256 G + 256² B``).

    Output keys added to (a copy of) the dict:

    * "image": uint8 tensor (3, S, S), S = ``INPUT.IMAGE_SIZE``, channels in ``INPUT.FORMAT`` order;
    * "instances": :class:`Instances` of size (S, S): one target per non-crowd segment, in
      "segments_info" order, with ``gt_classes`` (int64, the contiguous "category_id"),
      ``gt_masks`` (**bool** (N, S, S), ``ids == segment id``; float32 (0, S, S) if none) and
      ``gt_boxes`` (XYXY absolute, tight boxes of the masks, zeros for empty masks). Segments that
      are empty after cropping are kept; crowd segments are dropped.
    """

    def _map(self, dataset_dict: Dict) -> Dict:
        file_name = dataset_dict["file_name"]
        pan_seg_file = self._pop_required(dataset_dict, "pan_seg_file_name")
        image = self._read_image(dataset_dict)
        pan_rgb = read_panoptic_png(pan_seg_file, image, file_name)

        image, _, transforms = self._augment(image)
        pan_ids = panoptic_rgb_to_ids(transforms.apply_segmentation(pan_rgb))
        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["instances"] = instances_from_panoptic(
            pan_ids, dataset_dict["segments_info"], with_boxes=True
        )
        return dataset_dict
