"""Training mapper for panoptic segmentation (MaskFormer's ``MaskFormerPanopticDatasetMapper``)."""
from typing import Dict

import torch

from . import register_mapper
from .mapper_utils import (
    PANOPTIC_VOID_ID,
    instances_from_panoptic,
    panoptic_rgb_to_ids,
    read_panoptic_png,
)
from .mask_former_semantic import MaskFormerSemanticDatasetMapper

__all__ = ["MaskFormerPanopticDatasetMapper"]


@register_mapper("mask_former_panoptic")
class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """
    Maps a panoptic dataset dict ("file_name", "pan_seg_file_name", "segments_info", optional
    "sem_seg_file_name", "height"/"width") to MaskFormer's training input.

    Augmentation and padding are those of :class:`MaskFormerSemanticDatasetMapper` (same config).
    The panoptic PNG gets the same geometric transforms (nearest), is decoded to segment ids
    (``R + 256 G + 256² B``, int64) and padded with 0 (VOID). The semantic label map, when present,
    drives the category-area-constrained crop and is emitted as "sem_seg" (the model ignores it).

    Output keys added to (a copy of) the dict:

    * "image": uint8 tensor (3, H, W), channels in ``INPUT.FORMAT`` order;
    * "sem_seg": int64 tensor (H, W), only if the dict has "sem_seg_file_name";
    * "instances": :class:`Instances` of size (H, W): one target per non-crowd segment, in
      "segments_info" order, with ``gt_classes`` (int64, the contiguous "category_id") and
      ``gt_masks`` (bool (N, H, W), ``ids == segment id``; float32 (0, H, W) if none). Segments that
      are empty after cropping are kept; crowd segments are dropped.
    """

    def _map(self, dataset_dict: Dict) -> Dict:
        file_name = dataset_dict["file_name"]
        pan_seg_file = self._pop_required(dataset_dict, "pan_seg_file_name")

        image, sem_seg, transforms, orig_image = self._read_and_augment(
            dataset_dict, require_sem_seg=self.crop_needs_sem_seg
        )
        pan_rgb = read_panoptic_png(pan_seg_file, orig_image, file_name)
        pan_ids = panoptic_rgb_to_ids(transforms.apply_segmentation(pan_rgb))
        pan_ids = self._pad(torch.as_tensor(pan_ids), PANOPTIC_VOID_ID)

        dataset_dict["image"] = image
        if sem_seg is not None:
            dataset_dict["sem_seg"] = sem_seg
        dataset_dict["instances"] = instances_from_panoptic(
            pan_ids.numpy(), dataset_dict["segments_info"], with_boxes=False
        )
        return dataset_dict
