"""Export adapter of :class:`SOTR`: image -> per-level class logits and kernels, and mask features."""
from typing import Dict, List, Tuple

import torch
from detectron2.structures import ImageList

from segcommon.deploy import ExportAdapter, ImageSizes, register_export_adapter

__all__ = ["SOTRExportAdapter"]


@register_export_adapter("SOTR")
class SOTRExportAdapter(ExportAdapter):
    """Outputs, for L = ``len(num_grids)`` levels: ``cate_l`` (1, K, S_l, S_l) class logits, then
    ``kernel_l`` (1, D, S_l, S_l) dynamic kernels, then ``mask_features`` (1, D, H/4, W/4).
    Post-processing (point NMS, dynamic convolution, matrix NMS) is :meth:`SOTR.inference`."""

    def __init__(self, model):
        super().__init__(model)
        levels = range(len(model.num_grids))
        self.output_names = tuple([f"cate_{i}" for i in levels] + [f"kernel_{i}" for i in levels] + ["mask_features"])

    @property
    def size_divisibility(self) -> int:
        return max(self.model.backbone.size_divisibility, 1)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        cate_preds, kernel_preds, mask_features = self.model.predict(ImageList(image, [tuple(image.shape[-2:])]))
        return tuple(cate_preds) + tuple(kernel_preds) + (mask_features,)

    def _postprocess(self, outputs: List[torch.Tensor], sizes: ImageSizes) -> Dict:
        L = len(self.model.num_grids)
        inputs = [{"height": sizes.output[0], "width": sizes.output[1]}]
        return self.model.inference(outputs[:L], outputs[L:2 * L], outputs[-1], [sizes.image], inputs)[0]
