"""Export adapter of :class:`MaskFormer`: image -> final class and mask logits (no auxiliary outputs)."""
from typing import Dict, List, Tuple

import torch

from segcommon.deploy import ExportAdapter, ImageSizes, register_export_adapter

__all__ = ["MaskFormerExportAdapter"]


@register_export_adapter("MaskFormer")
class MaskFormerExportAdapter(ExportAdapter):
    """Outputs ``pred_logits`` (1, Q, K+1) and ``pred_masks`` (1, Q, H/4, W/4); post-processing is
    :meth:`MaskFormer.inference` (semantic, panoptic and/or instance, as the config enables)."""

    output_names = ("pred_logits", "pred_masks")

    @property
    def size_divisibility(self) -> int:
        return max(self.model.size_divisibility, 1)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model.sem_seg_head(self.model.backbone(image))
        return outputs["pred_logits"], outputs["pred_masks"]

    def _postprocess(self, outputs: List[torch.Tensor], sizes: ImageSizes) -> Dict:
        logits, masks = outputs
        return self.model.inference(logits, masks, sizes.input, [sizes.image], [sizes.output])[0]
