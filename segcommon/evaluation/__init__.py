"""Evaluators shared by the models: panoptic quality without panopticapi, and COCO instance AP
for datasets whose thing classes are interleaved with stuff classes."""
from .instance_evaluation import InstanceSegEvaluator
from .panoptic_evaluation import COCOPanopticEvaluator, pq_compute, pq_compute_reference

__all__ = [
    "COCOPanopticEvaluator",
    "InstanceSegEvaluator",
    "pq_compute",
    "pq_compute_reference",
]
