"""CFT: Category Feature Transformer for semantic segmentation (arXiv 2308.05581; the "v1" head of
BebDong/EMOSeg)."""

from .config import add_cft_config  # noqa: F401
from . import data  # noqa: F401  (registers the "cft_semantic" mapper and Pascal Context)
from . import modeling  # noqa: F401  (registers CFTHead and CFTSemanticSegmentor)
from . import deploy  # noqa: F401  (registers the export adapter)
