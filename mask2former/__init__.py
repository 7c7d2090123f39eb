"""Mask2Former (Cheng et al., CVPR 2022): masked-attention mask transformer for universal segmentation."""

from .config import add_maskformer2_config, add_mask2former_config  # noqa: F401
