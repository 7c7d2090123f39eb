"""Mask Transfiner (Ke et al., CVPR 2022): quadtree transformer refinement of Mask R-CNN masks.

Importing the package registers ``TransfinerROIHeads`` (ROI_HEADS_REGISTRY) and ``TransfinerMaskHead``
(ROI_MASK_HEAD_REGISTRY); the meta-architecture is Detectron2's ``GeneralizedRCNN``, whose evaluation
task ("instance") the shared evaluator table already knows.
"""

from .config import add_transfiner_config  # noqa: F401
from .modeling import TransfinerMaskHead, TransfinerMaskPooler, TransfinerROIHeads  # noqa: F401
from . import deploy  # noqa: F401  (registers the export adapter)
