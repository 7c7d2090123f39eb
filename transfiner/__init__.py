"""Mask Transfiner (Ke et al., CVPR 2022): quadtree transformer refinement of Mask R-CNN masks."""

from .config import add_transfiner_config  # noqa: F401
