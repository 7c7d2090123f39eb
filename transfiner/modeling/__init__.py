from .encoder import NodeEncoder, TransfinerEncoderLayer, sine_position_encoding
from .roi_heads import TransfinerMaskHead, TransfinerMaskPooler, TransfinerROIHeads

__all__ = [
    "NodeEncoder",
    "TransfinerEncoderLayer",
    "sine_position_encoding",
    "TransfinerMaskHead",
    "TransfinerMaskPooler",
    "TransfinerROIHeads",
]
