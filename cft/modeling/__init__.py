"""CFT's modules: the CFT block, the decode head and the meta-architecture. Importing this package
registers ``CFTHead`` (``SEM_SEG_HEADS_REGISTRY``) and ``CFTSemanticSegmentor``
(``META_ARCH_REGISTRY``)."""
from .cft_block import CFTBlock  # noqa: F401
from .cft_head import CFTHead  # noqa: F401
from .meta_arch import CFTSemanticSegmentor  # noqa: F401
