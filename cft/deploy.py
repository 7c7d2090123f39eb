"""Export adapter of :class:`CFTSemanticSegmentor`: image -> per-class logits at the input size."""
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess

from segcommon.deploy import ExportAdapter, ImageSizes, register_export_adapter

from .modeling.meta_arch.cft_segmentor import slide_windows

__all__ = ["CFTExportAdapter"]


@register_export_adapter("CFTSemanticSegmentor")
class CFTExportAdapter(ExportAdapter):
    """Outputs ``sem_seg_logits`` (1, K, H, W). Any input size is accepted (no padding).

    Whole-image inference (``MODEL.CFT.TEST.MODE whole``) is one graph:
    :meth:`CFTSemanticSegmentor.inference`, including its resizing to ``RESIZE_TO_MULTIPLE`` and back.
    In sliding-window inference the number of windows depends on the image size, so the graph is the
    network on one window (``encode_decode``) and :meth:`run` loops over the windows of
    :func:`slide_windows` and averages their logits, as ``slide_inference`` does.
    """

    output_names = ("sem_seg_logits",)

    def __init__(self, model):
        if model.test_mode == "slide" and model.resize_to_multiple > 0:
            raise NotImplementedError(
                "exporting CFT's sliding-window inference with MODEL.CFT.TEST.RESIZE_TO_MULTIPLE > 0 is not supported"
            )
        super().__init__(model)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor]:
        if self.model.test_mode == "slide":
            return (self.model.encode_decode(image),)
        return (self.model.inference(image),)

    def run(
        self, network: Callable[..., List[np.ndarray]], image: np.ndarray, image_size: Tuple[int, int]
    ) -> List[np.ndarray]:
        if self.model.test_mode != "slide":
            return super().run(network, image, image_size)
        _, _, h, w = image.shape
        total, count = None, np.zeros((1, 1, h, w), dtype=np.float32)
        for y0, y1, x0, x1 in slide_windows(h, w, self.model.test_crop_size, self.model.test_stride):
            (logits,) = network(image[:, :, y0:y1, x0:x1])
            if total is None:
                total = np.zeros((1, logits.shape[1], h, w), dtype=logits.dtype)
            total[:, :, y0:y1, x0:x1] += logits
            count[:, :, y0:y1, x0:x1] += 1
        return [total / count]

    def _postprocess(self, outputs: List[torch.Tensor], sizes: ImageSizes) -> Dict:
        return {"sem_seg": sem_seg_postprocess(outputs[0][0], sizes.image, *sizes.output)}
