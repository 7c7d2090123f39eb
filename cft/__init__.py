"""CFT: Category Feature Transformer for semantic segmentation."""

from .config import add_cft_config  # noqa: F401
