"""One CFT block: Category Feature Embedding followed by Category Feature Transformation.

Module and attribute names equal the reference's (``BebDong/EMOSeg`` ``cft_head.py``: ``norm_low``,
``norm_high``, ``cross_attn.q.depthwise_conv.conv``, ``cross_attn.kv.learner.0/1``, ...), so that a
reference checkpoint converts by a prefix swap (``tools/convert_cft_mmseg.py``) and the reference
manifests (``shared/reference/cft/*.json``) can be used as a test oracle. Shapes below use B batch,
C channels, K classes, (H, W) the finer "query" map and (h, w) the coarser "context" map.
"""
from typing import Tuple

from torch import Tensor, nn

__all__ = [
    "CategoryFeatureEmbedding",
    "CategoryFeatureTransformation",
    "CFTBlock",
    "DepthwiseSeparableConv",
    "channel_layer_norm",
]


def channel_layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """Applies a LayerNorm over the channels of a (B, C, H, W) map (per pixel, channels-last), as the
    reference does, rather than Detectron2's channels-first ``LayerNorm`` (same maths, different
    rounding)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvUnit(nn.Module):
    """A bare conv stored under the attribute ``conv``: MMCV's ``ConvModule`` without norm and
    activation, kept only so that the state-dict names match the reference's."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DepthwiseSeparableConv(nn.Module):
    """Depth-wise k x k conv then point-wise 1x1 conv, both with bias, no norm, no activation (MMCV's
    ``DepthwiseSeparableConvModule`` with ``act_cfg=None``). (B, C, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        self.depthwise_conv = _ConvUnit(
            nn.Conv2d(in_channels, in_channels, kernel_size, 1, kernel_size // 2, groups=in_channels, bias=bias)
        )
        self.pointwise_conv = _ConvUnit(nn.Conv2d(in_channels, out_channels, 1, bias=bias))
        # MMCV's ConvModule initialises its conv itself (Kaiming normal, fan_out, ReLU gain, bias 0)
        # even without activation; the reference training started from that.
        for unit in (self.depthwise_conv, self.pointwise_conv):
            nn.init.kaiming_normal_(unit.conv.weight, mode="fan_out", nonlinearity="relu")
            if unit.conv.bias is not None:
                nn.init.zeros_(unit.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class CategoryFeatureEmbedding(nn.Module):
    """Class-mask logits and one embedding (key and value) per class from the context map.

    * ``learner``: grouped 1x1 conv (C -> C) then 1x1 conv (C -> K), no biases, nothing between them:
      the class-mask logits M (B, K, h, w), supervised by the mask loss;
    * softmax of M over the h*w positions, per class: spatial weights;
    * ``conv``: grouped 1x1 conv (C -> C, no bias): the aligned features A (B, C, h*w);
    * class embeddings E = softmax(M) @ A^T (B, K, C); ``embed`` (Linear C -> 2C) gives keys
      ``[..., :C]`` and values ``[..., C:]``.

    No masking of padded positions: the reference pads every training image to the crop size, so
    all of them take part in the softmax.
    """

    def __init__(self, embed_dim: int, num_classes: int, num_groups: int = 4, bias: bool = True):
        super().__init__()
        self.learner = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, 1, groups=num_groups, bias=False),
            nn.Conv2d(embed_dim, num_classes, 1, bias=False),
        )
        self.conv = nn.Conv2d(embed_dim, embed_dim, 1, groups=num_groups, bias=False)
        self.embed = nn.Linear(embed_dim, 2 * embed_dim, bias=bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x: normalised context map (B, C, h, w). Returns the class-mask logits (B, K, h, w) and
        the projected class tokens (B, K, 2C) (keys then values along the last axis)."""
        mask = self.learner(x)
        weights = mask.flatten(2).softmax(dim=-1)  # (B, K, h*w), each class sums to 1 over positions
        aligned = self.conv(x).flatten(2)  # (B, C, h*w)
        class_embed = weights @ aligned.transpose(1, 2)  # (B, K, C)
        return mask, self.embed(class_embed)


class CategoryFeatureTransformation(nn.Module):
    """Multi-head cross-attention from every pixel of the query map to the K class tokens.

    Sign convention: the reference computes ``rowmax(S) - S`` of the scaled similarities
    S = q.k / sqrt(d) before the softmax over the K tokens; as softmax is shift-invariant this is
    ``softmax(-S)``. With ``negate_logits`` (default, the reference) that is what is computed, so
    reference weights give reference outputs. With ``negate_logits=False`` the standard
    ``softmax(+S)`` is used; reference weights then need their key rows negated
    (``tools/convert_cft_mmseg.py --standard-sign``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_classes: int,
        embed_groups: int,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        qkv_bias: bool = True,
        negate_logits: bool = True,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.negate_logits = negate_logits
        self.q = DepthwiseSeparableConv(embed_dim, embed_dim, 3, bias=qkv_bias)
        self.kv = CategoryFeatureEmbedding(embed_dim, num_classes, embed_groups, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Conv2d(embed_dim, embed_dim, 1)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, query: Tensor, context: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            query: normalised finer map (B, C, H, W).
            context: normalised coarser map (B, C, h, w).

        Returns:
            the attention output (B, C, H, W) and the class-mask logits (B, K, h, w).
        """
        b, c, h, w = query.shape
        heads, d = self.num_heads, self.head_dim
        q = self.q(query).reshape(b, heads, d, h * w).transpose(2, 3)  # (B, heads, HW, d)
        mask, kv = self.kv(context)
        k, v = kv.split(c, dim=-1)  # (B, K, C) each; head t owns channels [t*d, (t+1)*d)
        k = k.reshape(b, -1, heads, d).transpose(1, 2)  # (B, heads, K, d)
        v = v.reshape(b, -1, heads, d).transpose(1, 2)
        logits = (q @ k.transpose(2, 3)) * self.scale  # (B, heads, HW, K)
        if self.negate_logits:
            logits = -logits
        attn = self.attn_drop(logits.softmax(dim=-1))
        out = (attn @ v).transpose(2, 3).reshape(b, c, h, w)  # heads concatenated head-major
        return self.proj_drop(self.proj(out)), mask


class CFTBlock(nn.Module):
    """Transformer-style block: ``Y = CFT(LN_low(low), LN_high(high)) + low``,
    ``Z = MixFFN(LN_mlp(Y)) + Y``; the Mix-FFN is 1x1 (C -> rC), depth-wise 3x3, GELU, 1x1 (rC -> C).
    No positional encoding, layer scale or drop-path (as the reference)."""

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 4,
        num_classes: int = 150,
        embed_groups: int = 4,
        mlp_ratio: int = 4,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        qkv_bias: bool = True,
        ln_eps: float = 1e-6,
        negate_logits: bool = True,
    ):
        super().__init__()
        self.norm_low = nn.LayerNorm(embed_dim, eps=ln_eps)
        self.norm_high = nn.LayerNorm(embed_dim, eps=ln_eps)
        self.cross_attn = CategoryFeatureTransformation(
            embed_dim, num_heads, num_classes, embed_groups, attn_drop, drop, qkv_bias, negate_logits
        )
        self.norm_mlp = nn.LayerNorm(embed_dim, eps=ln_eps)
        hidden = embed_dim * mlp_ratio
        # Indices 0, 1, 4 hold the parameters, as in the reference's nn.Sequential.
        self.mlp = nn.Sequential(
            nn.Conv2d(embed_dim, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden),
            nn.GELU(),
            nn.Dropout(drop),
            nn.Conv2d(hidden, embed_dim, 1),
            nn.Dropout(drop),
        )

    def forward(self, low: Tensor, high: Tensor) -> Tuple[Tensor, Tensor]:
        """low: finer map (B, C, H, W); high: coarser map (B, C, h, w). Returns the block output
        (B, C, H, W) and the class-mask logits (B, K, h, w)."""
        attn_out, mask = self.cross_attn(
            channel_layer_norm(self.norm_low, low), channel_layer_norm(self.norm_high, high)
        )
        out = attn_out + low  # residual with the un-normalised query map
        out = self.mlp(channel_layer_norm(self.norm_mlp, out)) + out
        return out, mask
