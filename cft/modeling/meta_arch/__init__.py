"""CFT's meta-architecture (registered in ``META_ARCH_REGISTRY``)."""
from .cft_segmentor import CFTSemanticSegmentor  # noqa: F401
