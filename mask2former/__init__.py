"""Mask2Former (Cheng et al., CVPR 2022): masked-attention mask transformer for universal segmentation."""

from .config import add_maskformer2_config, add_mask2former_config  # noqa: F401
from . import modeling  # noqa: F401  (registers pixel decoders, transformer decoders, the head)
from .maskformer_model import MaskFormer  # noqa: F401
from . import deploy  # noqa: F401  (registers the export adapter)
