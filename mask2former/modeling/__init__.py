from .transformer_decoder import MultiScaleMaskedTransformerDecoder, build_transformer_decoder  # noqa: F401
from .criterion import SetCriterion  # noqa: F401
from .matcher import HungarianMatcher  # noqa: F401
from .position_encoding import PositionEmbeddingSine  # noqa: F401
from .pixel_decoder import PIXEL_DECODER_REGISTRY, build_pixel_decoder  # noqa: F401
from .meta_arch import MaskFormerHead  # noqa: F401
