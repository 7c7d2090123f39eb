"""Export adapter of :class:`CFTSemanticSegmentor`: image -> per-class logits at the input size."""
from typing import Dict, List, Tuple

import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess

from segcommon.deploy import ExportAdapter, ImageSizes, register_export_adapter

__all__ = ["CFTExportAdapter"]


@register_export_adapter("CFTSemanticSegmentor")
class CFTExportAdapter(ExportAdapter):
    """Outputs ``sem_seg_logits`` (1, K, H, W): whole-image inference
    (:meth:`CFTSemanticSegmentor.inference`, including its resizing to ``RESIZE_TO_MULTIPLE`` and
    back). Any input size is accepted (no padding). Sliding-window inference runs a Python loop whose
    length depends on the image size, so it is not exported: export with
    ``MODEL.CFT.TEST.MODE whole``."""

    output_names = ("sem_seg_logits",)

    def __init__(self, model):
        if model.test_mode != "whole":
            raise NotImplementedError(
                f"CFT test mode {model.test_mode!r} is not exportable (its window loop depends on the image"
                " size); export with MODEL.CFT.TEST.MODE whole"
            )
        super().__init__(model)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.model.inference(image),)

    def _postprocess(self, outputs: List[torch.Tensor], sizes: ImageSizes) -> Dict:
        return {"sem_seg": sem_seg_postprocess(outputs[0][0], sizes.image, *sizes.output)}
