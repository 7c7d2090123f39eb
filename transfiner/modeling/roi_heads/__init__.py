from .mask_head import TransfinerMaskHead
from .pooler import TransfinerMaskPooler
from .transfiner_roi_heads import TransfinerROIHeads

__all__ = ["TransfinerMaskHead", "TransfinerMaskPooler", "TransfinerROIHeads"]
