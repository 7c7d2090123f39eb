"""Multi-scale and flip test-time augmentation for semantic segmentation (``TEST.AUG.*``).

Each image is resized to every ``TEST.AUG.MIN_SIZES`` entry (longer side at most
``TEST.AUG.MAX_SIZE``), also horizontally flipped when ``TEST.AUG.FLIP``; the model's ``sem_seg``
outputs, already at the original resolution, are flipped back where needed and averaged.
"""
from typing import Dict, List

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from torch import nn

__all__ = ["SemanticSegmentorWithTTA"]


class SemanticSegmentorWithTTA(nn.Module):
    """Wraps a model that returns ``{"sem_seg": (K, H, W)}`` per image at the requested
    ``height``/``width``; returns the average over the augmented copies, (K, height, width)."""

    def __init__(self, cfg, model: nn.Module, tta_mapper=None):
        super().__init__()
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        return [self._inference_one_image(x) for x in batched_inputs]

    def _inference_one_image(self, inputs: Dict) -> Dict[str, torch.Tensor]:
        inputs = dict(inputs)
        if "image" not in inputs:  # (H, W, C) file -> (C, H, W) tensor, as the test mapper gives
            image = read_image(inputs["file_name"], self.cfg.INPUT.FORMAT)
            inputs["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        inputs.setdefault("height", inputs["image"].shape[-2])
        inputs.setdefault("width", inputs["image"].shape[-1])
        total, count = None, 0
        for aug_input in self.tta_mapper(inputs):
            tfm = aug_input.pop("transforms")
            with torch.no_grad():
                sem_seg = self.model([aug_input])[0]["sem_seg"]
            if any(isinstance(t, HFlipTransform) for t in tfm.transforms):
                sem_seg = sem_seg.flip(dims=[2])
            total = sem_seg if total is None else total + sem_seg
            count += 1
        return {"sem_seg": total / count}
