"""Export adapter of Detectron2's ``GeneralizedRCNN`` (Mask Transfiner, and plain Mask R-CNN).

The whole detector is the exported graph: backbone, RPN, box head and the (Transfiner) mask head,
to boxes, scores, classes and 112x112 (28x28 for Mask R-CNN) mask probabilities. Detectron2's RPN
and ROI heads branch on tensor values (``find_top_rpn_proposals`` tests ``valid_mask.all()``; the
quadtree selects a data-dependent number of nodes), which ``torch.export`` cannot capture with a
dynamic image size: exporting raises an :class:`~segcommon.deploy.ExportError` naming that part.
The adapter still runs in PyTorch, and its post-processing is Detectron2's ``detector_postprocess``.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances

from segcommon.deploy import ExportAdapter, ImageSizes, register_export_adapter

__all__ = ["GeneralizedRCNNExportAdapter"]


@register_export_adapter("GeneralizedRCNN")
class GeneralizedRCNNExportAdapter(ExportAdapter):
    """Outputs ``boxes`` (N, 4) XYXY in input pixels, ``scores`` (N,), ``classes`` (N,) int64 and
    ``masks`` (N, 1, M, M) probabilities in box coordinates."""

    output_names = ("boxes", "scores", "classes", "masks")

    @property
    def size_divisibility(self) -> int:
        return max(self.model.backbone.size_divisibility, 1)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        images = ImageList(image, [tuple(image.shape[-2:])])
        features = self.model.backbone(image)
        proposals, _ = self.model.proposal_generator(images, features, None)
        results, _ = self.model.roi_heads(images, features, proposals, None)
        r = results[0]
        return r.pred_boxes.tensor, r.scores, r.pred_classes, r.pred_masks

    def _postprocess(self, outputs: List[torch.Tensor], sizes: ImageSizes) -> Dict:
        boxes, scores, classes, masks = outputs
        instances = Instances(sizes.image)
        instances.pred_boxes = Boxes(boxes)
        instances.scores = scores
        instances.pred_classes = classes
        instances.pred_masks = masks
        return {"instances": detector_postprocess(instances, *sizes.output)}
