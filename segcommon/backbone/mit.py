"""Mix Transformer (MiT, the SegFormer encoder; Xie et al., NeurIPS 2021) and its Detectron2 adapter.

Architecture as MMSegmentation's ``MixVisionTransformer`` (used by CFT's MiT configs), parameter
names as the original SegFormer code (NVlabs/SegFormer ``mix_transformer.py``): ``patch_embed{i}``,
``block{i}.{j}.attn.{q,kv,proj,sr,norm}``, ``block{i}.{j}.mlp.{fc1,dwconv.dwconv,fc2}``,
``norm{i}`` for stages i = 1..4. ``tools/convert_cft_mmseg.py`` maps MMSeg names onto these.

Per stage: an overlapping patch embedding (conv k x k, stride s, padding k // 2, then LayerNorm),
blocks ``x + DropPath(EfficientAttention(LN(x)))`` and ``x + DropPath(MixFFN(LN(x)))``, and a
stage-final LayerNorm. Every LayerNorm uses ``ln_eps`` (MMSeg: 1e-6 everywhere; the original code
has 1e-5 in the patch embeddings).
"""
from typing import Dict, List, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

from .stage_outputs import NamedStageOutputs
from .swin import DropPath

__all__ = ["MixVisionTransformer", "D2MixVisionTransformer", "MIT_SIZES"]

# MiT-B0..B5 (embed dims of stage 1, blocks per stage); heads, sr ratios, MLP ratio are shared.
MIT_SIZES: Dict[str, Tuple[int, List[int]]] = {
    "b0": (32, [2, 2, 2, 2]),
    "b1": (64, [2, 2, 2, 2]),
    "b2": (64, [3, 4, 6, 3]),
    "b3": (64, [3, 4, 18, 3]),
    "b4": (64, [3, 8, 27, 3]),
    "b5": (64, [3, 6, 40, 3]),
}


class OverlapPatchEmbed(nn.Module):
    """Conv (kernel k, stride s, padding k // 2) then LayerNorm. (B, C_in, H, W) ->
    tokens (B, H' * W', C) and (H', W') with H' = floor((H + 2 * (k // 2) - k) / s) + 1."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int, ln_eps: float):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=ln_eps)

    def forward(self, x: Tensor) -> Tuple[Tensor, int, int]:
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a spatially reduced copy of the tokens
    (conv with kernel = stride = ``sr_ratio``, then LayerNorm) when ``sr_ratio`` > 1.
    (B, N, C) -> (B, N, C); scale head_dim ** -0.5."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float, sr_ratio: int,
        ln_eps: float,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # rows [0, C): keys, [C, 2C): values
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=ln_eps)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, c // heads).transpose(1, 2)  # (B, heads, N, d)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        k, v = self.kv(x).reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class _DWConv(nn.Module):
    """Depth-wise 3x3 conv on tokens (B, N, C) laid out as (B, C, H, W)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """fc1 -> depth-wise 3x3 conv -> GELU -> dropout -> fc2 -> dropout, on (B, N, C) tokens."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), h, w)))
        return self.drop(self.fc2(x))


class MiTBlock(nn.Module):
    """``x + DropPath(attn(norm1(x)))`` then ``x + DropPath(mlp(norm2(x)))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float,
        drop_path: float, sr_ratio: int, ln_eps: float,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = EfficientSelfAttention(dim, num_heads, qkv_bias, attn_drop, drop, sr_ratio, ln_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Module):
    """The four-stage MiT encoder. ``forward`` maps (B, C_in, H, W) to the four stage outputs
    (B, embed_dims * num_heads[i], H / s_i, W / s_i) with strides s_i = 4, 8, 16, 32 (rounded up)
    for the default patch sizes/strides."""

    def __init__(
        self,
        in_chans: int = 3,
        embed_dims: int = 64,
        num_layers: Sequence[int] = (3, 4, 6, 3),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        patch_sizes: Sequence[int] = (7, 3, 3, 3),
        strides: Sequence[int] = (4, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        ln_eps: float = 1e-6,
    ):
        super().__init__()
        n = len(num_layers)
        if not all(len(s) == n for s in (num_heads, patch_sizes, strides, sr_ratios)):
            raise ValueError("num_layers, num_heads, patch_sizes, strides and sr_ratios differ in length")
        self.num_stages = n
        self.dims = [embed_dims * h for h in num_heads]
        self.strides = []
        stride = 1
        for s in strides:
            stride *= s
            self.strides.append(stride)
        total = sum(num_layers)
        # linspace(0, rate, total) in plain Python, so the module also builds on the meta device.
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        cur, prev = 0, in_chans
        for i in range(n):
            dim = self.dims[i]
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(prev, dim, patch_sizes[i], strides[i], ln_eps))
            blocks = [
                MiTBlock(dim, num_heads[i], mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rates[cur + j],
                         sr_ratios[i], ln_eps)
                for j in range(num_layers[i])
            ]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim, eps=ln_eps))
            cur += num_layers[i]
            prev = dim
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # MMSeg's MixVisionTransformer.init_weights (used when no checkpoint is loaded).
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> List[Tensor]:
        outs = []
        for i in range(1, self.num_stages + 1):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            outs.append(x)
        return outs


@BACKBONE_REGISTRY.register()
class D2MixVisionTransformer(NamedStageOutputs, MixVisionTransformer, Backbone):
    """MiT as a Detectron2 backbone configured by ``MODEL.MIT.*`` (keys added by
    ``cft.add_cft_config``). Returns ``{"res2".."res5": (B, C_i, ceil(H / s_i), ceil(W / s_i))}``
    for the names in ``MODEL.MIT.OUT_FEATURES``; any input size works (no padding needed)."""

    def __init__(self, cfg: CfgNode, input_shape: ShapeSpec):
        c = cfg.MODEL.MIT
        super().__init__(
            in_chans=input_shape.channels or 3,
            embed_dims=c.EMBED_DIMS,
            num_layers=list(c.NUM_LAYERS),
            num_heads=list(c.NUM_HEADS),
            patch_sizes=list(c.PATCH_SIZES),
            strides=list(c.STRIDES),
            sr_ratios=list(c.SR_RATIOS),
            mlp_ratio=c.MLP_RATIO,
            qkv_bias=c.QKV_BIAS,
            drop_rate=c.DROP_RATE,
            attn_drop_rate=c.ATTN_DROP_RATE,
            drop_path_rate=c.DROP_PATH_RATE,
            ln_eps=c.LN_EPS,
        )
        self._set_stage_outputs("MODEL.MIT.OUT_FEATURES", c.OUT_FEATURES, self.strides, self.dims)

    @property
    def size_divisibility(self) -> int:
        # The overlapping patch embeddings accept any size and the CFT head resizes to explicit sizes.
        return 0
