"""Pixel decoders: turn the backbone's multi-scale features into per-pixel mask embeddings and the
multi-scale maps the transformer decoder attends to."""
from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import nn

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder", "BasePixelDecoder", "MSDeformAttnPixelDecoder"]

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """
Registry for pixel decoders, selected by ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``.

A registered object is called as ``obj(cfg, input_shape)`` where ``input_shape`` is the
``Dict[str, ShapeSpec]`` of the backbone features the head reads, and must return an ``nn.Module``
with ``forward_features(features: Dict[str, Tensor]) -> (mask_features, extra_or_None,
multi_scale_features)``: mask_features (B, MASK_DIM, H/4, W/4), an optional extra map (None here),
and a list of maps (B, CONVS_DIM, h, w), lowest resolution first.

(The reference registers its pixel decoders in detectron2's SEM_SEG_HEADS_REGISTRY; this project
keeps them in their own registry so that they cannot be picked as ``SEM_SEG_HEAD.NAME``.)
"""

# The decoders register themselves on import; they need PIXEL_DECODER_REGISTRY defined above.
from .fpn import BasePixelDecoder  # noqa: E402,F401  isort:skip
from .msdeformattn import MSDeformAttnPixelDecoder  # noqa: E402,F401  isort:skip


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Builds the pixel decoder named by ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``.

    Args:
        cfg: the project config.
        input_shape: backbone feature name -> ShapeSpec (channels, stride).

    Raises:
        KeyError: the name is not registered in PIXEL_DECODER_REGISTRY.
        ValueError: the built object has no callable ``forward_features``.
    """
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name not in PIXEL_DECODER_REGISTRY:
        known = sorted(k for k, _ in PIXEL_DECODER_REGISTRY)
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not a registered pixel decoder; known: {known}"
        )
    model = PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} built a {type(model).__name__} without a "
            "forward_features(features) method, which the mask-former head calls"
        )
    return model
