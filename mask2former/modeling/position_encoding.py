"""Sine positional encoding for 2-D feature maps (DETR style), used by Mask2Former's pixel decoder and
transformer decoder.

See ``shared/specs/mask2former.md`` section 4.3 for the formula.
"""
import math
from typing import Optional

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Fixed sine/cosine encoding of the (row, column) position of every pixel of a feature map.

    For each axis ``a`` (y first, then x) the position ``a_embed`` is the 1-based running count of
    non-padded pixels along that axis; with ``normalize=True`` it is divided by the count at the end of
    the row/column (plus 1e-6) and multiplied by ``scale``, so it spans ``(0, scale]`` whatever the map
    size. With ``dim_t[k] = temperature ** (2 * (k // 2) / num_pos_feats)``, channel ``k`` of an axis
    is ``sin(a_embed / dim_t[k])`` for even ``k`` and ``cos(a_embed / dim_t[k])`` for odd ``k``.
    The output stacks ``num_pos_feats`` y-channels, then ``num_pos_feats`` x-channels.

    The module has no parameters or buffers; the encoding depends only on the map size and the mask.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = False,
        scale: Optional[float] = None,
    ):
        """
        Args:
            num_pos_feats: channels per axis (even); the output has ``2 * num_pos_feats`` channels.
            temperature: base of the geometric progression of wavelengths.
            normalize: rescale positions to ``(0, scale]`` (Mask2Former always uses True).
            scale: upper end of the normalised range; default ``2 * pi``. Only meaningful with
                ``normalize=True``, so passing it without is an error rather than silently ignored.
        """
        super().__init__()
        if num_pos_feats % 2:
            # sin/cos channels come in pairs sharing one wavelength.
            raise ValueError(f"PositionEmbeddingSine: num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: `scale` is only used when normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W) feature map; only its batch size, spatial size and device are used.
            mask: optional (B, H, W) bool, True at padded pixels (which are not counted). ``None``
                means no padding.

        Returns:
            (B, 2 * num_pos_feats, H, W) float32 encoding (float32 whatever ``x``'s dtype, as the
            reference does; callers cast if they need to).
        """
        if mask is None:
            mask = torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        not_mask = ~mask
        # Cumulative counts give 1-based positions that skip padded pixels.
        y_embed = not_mask.cumsum(1, dtype=torch.float32)  # (B, H, W)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        k = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        # Channels 2i and 2i+1 share one wavelength (one sin, one cos).
        dim_t = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_pos_feats)

        pos_x = x_embed[:, :, :, None] / dim_t  # (B, H, W, F)
        pos_y = y_embed[:, :, :, None] / dim_t
        # Interleave: even channels sin, odd channels cos.
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )
