"""Swin Transformer (v1) as a dense-prediction backbone, independent of Detectron2.

Paper: Z. Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
ICCV 2021, https://arxiv.org/abs/2103.14030.

This is the detection / segmentation variant of Swin (Swin-Transformer-Object-Detection's and
Swin-Transformer-Semantic-Segmentation's ``SwinTransformer``, as vendored by
facebookresearch/Mask2Former ``mask2former/modeling/backbone/swin.py`` and by SysCV/transfiner
``swint/`` and ``swinb/``), re-written here; timm's ``swin_transformer.py`` was a second reference for
the maths. It differs from the ImageNet classifier in ways that matter for checkpoints and outputs:

* any input size: the image is zero-padded to a multiple of the patch size, every block pads its map
  to a multiple of the window size (after ``norm1``) and every patch merging pads to an even size;
* the shifted-window attention mask is rebuilt in each forward from the padded map size, and odd
  blocks always shift by ``window_size // 2`` (never switched off on small maps);
* each output stage has its own LayerNorm ``norm{i}``; there is no final ``norm`` and no ``head``.

Module and parameter names are the official ones (``patch_embed.proj``, ``layers.{i}.blocks.{j}.attn.
relative_position_bias_table``, ``layers.{i}.downsample.reduction``, ``norm{i}``, ...), and
``relative_position_index`` is a persistent buffer, so the state dict has exactly the keys of the
official models and ImageNet Swin checkpoints load by name (see ``tools/convert_swin_to_d2.py``).

The Detectron2 adapters (``D2SwinTransformer`` and Mask Transfiner's ``build_swin[tb]_fpn_backbone``)
live in ``segcommon/backbone/d2_swin.py``.
"""
from typing import List, Optional, Sequence, Set, Tuple, Type

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from torch import Tensor, nn

__all__ = [
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "SwinTransformer",
    "SwinTransformerBlock",
    "BasicLayer",
    "WindowAttention",
    "relative_position_index",
    "shifted_window_attention_mask",
    "window_partition",
    "window_reverse",
]

# Logit added to the pairs of tokens that a shifted window must keep apart. The official code uses
# -100 (not -inf): exp(-100) is ~4e-44, i.e. zero for float32 softmax, and a finite value cannot
# produce NaN rows. Kept identical so that outputs match the reference models'.
SHIFT_MASK_VALUE = -100.0


def _pair(x: int) -> Tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)  # type: ignore[return-value]


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """Cuts a feature map into non-overlapping square windows.

    Args:
        x: (B, H, W, C), with H and W multiples of ``window_size``.
        window_size: side of the windows, ws.

    Returns:
        (B * H/ws * W/ws, ws, ws, C): batch-major, then windows in row-major order over the window
        grid; inside a window, tokens are in row-major order.
    """
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: Tensor, window_size: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: (B * H/ws * W/ws, ws, ws, C).
        window_size: ws.
        H, W: size of the map the windows were cut from (multiples of ws).

    Returns:
        (B, H, W, C).
    """
    num_windows = (H // window_size) * (W // window_size)
    B = windows.shape[0] // num_windows
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def relative_position_index(window_size: Tuple[int, int]) -> Tensor:
    """Index into the relative position bias table for every pair of tokens of a window.

    For tokens i, j at (y, x) positions inside a Wh x Ww window,
    ``index[i, j] = (y_i - y_j + Wh - 1) * (2 * Ww - 1) + (x_i - x_j + Ww - 1)``.

    Returns:
        (Wh*Ww, Wh*Ww) int64 tensor with values in [0, (2Wh-1)(2Ww-1)).
    """
    wh, ww = window_size
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # (Wh*Ww,) row-major, as the tokens of a window
    dy = ys[:, None] - ys[None, :] + (wh - 1)
    dx = xs[:, None] - xs[None, :] + (ww - 1)
    return dy * (2 * ww - 1) + dx


def shifted_window_attention_mask(
    height: int, width: int, window_size: int, shift_size: int, device: Optional[torch.device] = None
) -> Tensor:
    """Additive attention mask of the shifted windows (SW-MSA) of a padded map.

    After the cyclic shift by (-s, -s), the windows of the last window row / column gather tokens that
    were far apart in the (padded) map. The map is labelled with 9 regions, by the row ranges
    [0, H - ws), [H - ws, H - s), [H - s, H) and the same column ranges; inside each window, a pair of
    tokens from different regions gets ``SHIFT_MASK_VALUE`` (-100), a pair from the same region 0.

    Args:
        height, width: padded map size (multiples of ``window_size``).
        window_size: ws.
        shift_size: s, with 0 < s < ws.

    Returns:
        (num_windows, ws*ws, ws*ws) float tensor, windows in :func:`window_partition` order.
    """

    def bounds(n: int) -> Tuple[Tuple[int, int], ...]:
        return (0, n - window_size), (n - window_size, n - shift_size), (n - shift_size, n)

    labels = torch.zeros((1, height, width, 1), device=device)
    region = 0
    for h0, h1 in bounds(height):
        for w0, w1 in bounds(width):
            labels[:, h0:h1, w0:w1, :] = region
            region += 1
    windows = window_partition(labels, window_size).view(-1, window_size * window_size)
    differ = windows.unsqueeze(1) != windows.unsqueeze(2)  # (nW, N, N)
    return torch.zeros(differ.shape, device=device).masked_fill(differ, SHIFT_MASK_VALUE)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al., 2016): in training, zeroes a residual branch for a
    random subset of the samples and rescales the kept ones by 1 / (1 - p)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Linear(C, hidden) -> GELU (exact erf form) -> dropout -> Linear(hidden, C) -> dropout."""

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: Type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., C) -> (..., out_features)."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias (W-MSA).

    ``qkv`` is one Linear(C, 3C) whose output splits as (3, heads, head_dim): q is the first C
    channels, k the next C, v the last C. The bias table has one row per relative offset,
    ((2Wh-1)(2Ww-1), heads); ``relative_position_index`` (a persistent buffer, as in the official
    checkpoints) maps each token pair to its row.
    """

    def __init__(
        self,
        dim: int,
        window_size: Tuple[int, int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = _pair(window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5

        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # The only non-default initialisation of the reference models (their init_weights is never
        # called by Detectron2).
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """(heads, N, N) bias added to the attention logits, N = Wh*Ww."""
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous()

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: (B * nW, N, C) tokens of the windows, N = Wh*Ww, windows of one image consecutive.
            mask: optional (nW, N, N) additive mask (0 / -100), the same for every image.

        Returns:
            (B * nW, N, C).
        """
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B_, heads, N, head_dim)

        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B_, heads, N, N)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(B_ // nw, nw, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))

        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """One Swin block: x + DropPath(W-MSA or SW-MSA(LN1(x))), then x + DropPath(MLP(LN2(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Type[nn.Module] = nn.GELU,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size} for {window_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            window_size=_pair(window_size),
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: Tensor, H: int, W: int, attn_mask: Optional[Tensor]) -> Tensor:
        """
        Args:
            x: (B, H*W, C) tokens in row-major order.
            H, W: map size.
            attn_mask: (nW, ws*ws, ws*ws) mask of the padded map; used only if this block shifts.

        Returns:
            (B, H*W, C).
        """
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"expected {H}x{W}={H * W} tokens, got {L}")
        ws, s = self.window_size, self.shift_size

        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        # Pad after the norm, so that the padded tokens are exact zeros (as in the reference); they
        # are attended to like real tokens (only the shift regions are masked).
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r

        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, ws).view(-1, ws * ws, C)
        windows = self.attn(windows, mask=attn_mask if s > 0 else None)
        x = window_reverse(windows.view(-1, ws, ws, C), ws, Hp, Wp)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = x[:, :H, :W, :].reshape(B, H * W, C)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging: (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C).

    Concatenates, in this order, the sub-grids (even row, even col), (odd row, even col),
    (even row, odd col), (odd row, odd col) -- the order the checkpoints' ``reduction`` expects --
    then LayerNorm(4C) and Linear(4C, 2C) without bias.
    """

    def __init__(self, dim: int, norm_layer: Type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        # Defined before `norm` so that the state dict lists `reduction` first, as the reference.
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        """x: (B, H*W, C) -> (B, ((H+1)//2) * ((W+1)//2), 2C)."""
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"expected {H}x{W}={H * W} tokens, got {L}")
        x = x.view(B, H, W, C)
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = x.view(B, -1, 4 * C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating regular (even j) and shifted (odd j) windows, then an
    optional :class:`PatchMerging`."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        downsample: Optional[Type[nn.Module]] = None,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        drop_path = list(drop_path) if len(drop_path) else [0.0] * depth
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim=dim,
                    num_heads=num_heads,
                    window_size=window_size,
                    shift_size=0 if j % 2 == 0 else window_size // 2,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[j],
                    norm_layer=norm_layer,
                )
                for j in range(depth)
            ]
        )
        self.downsample = downsample(dim=dim, norm_layer=norm_layer) if downsample is not None else None

    def forward(self, x: Tensor, H: int, W: int) -> Tuple[Tensor, int, int, Tensor, int, int]:
        """
        Args:
            x: (B, H*W, C).

        Returns:
            (stage output (B, H*W, C), H, W, next-stage input, its height, its width); without a
            downsample the next-stage input is the stage output.
        """
        ws = self.window_size
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        # One mask per stage and forward: it depends on the padded size, i.e. on the input image.
        attn_mask = shifted_window_attention_mask(Hp, Wp, ws, self.shift_size, device=x.device).to(x.dtype)
        for blk in self.blocks:
            if self.use_checkpoint and self.training:
                x = torch_checkpoint.checkpoint(blk, x, H, W, attn_mask, use_reentrant=False)
            else:
                x = blk(x, H, W, attn_mask)
        if self.downsample is None:
            return x, H, W, x, H, W
        return x, H, W, self.downsample(x, H, W), (H + 1) // 2, (W + 1) // 2


class PatchEmbed(nn.Module):
    """Image to patch tokens: zero-pad right/bottom to a multiple of the patch size, Conv2d with
    kernel = stride = patch size, optional LayerNorm over channels."""

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Optional[Type[nn.Module]] = None,
    ):
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, H, W) -> (B, embed_dim, ceil(H/p), ceil(W/p))."""
        _, _, H, W = x.shape
        ph, pw = self.patch_size
        if W % pw or H % ph:
            x = F.pad(x, (0, (pw - W % pw) % pw, 0, (ph - H % ph) % ph))
        x = self.proj(x)
        if self.norm is not None:
            Wh, Ww = x.shape[2:]
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(-1, self.embed_dim, Wh, Ww)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer backbone returning the normalised maps of the stages in ``out_indices``.

    Stage i (0-based) has ``embed_dim * 2**i`` channels and stride ``patch_size * 2**i``.

    Args:
        pretrain_img_size: image size of the pre-training; sizes the absolute position embedding
            (only used when ``ape``).
        patch_size: side of the square patches (4 in every released model).
        in_chans: input channels.
        embed_dim: channels of stage 0 (T/S 96, B 128, L 192).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: window side in tokens (7 or 12).
        mlp_ratio: MLP hidden width / stage width.
        qkv_bias: whether ``qkv`` has a bias.
        qk_scale: attention scale; None means head_dim ** -0.5.
        drop_rate: dropout after the patch embedding, in the MLPs and after the attention projection.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth; block k of all blocks gets linspace(0, rate, sum(depths))[k].
        norm_layer: normalisation layer class (LayerNorm).
        ape: add a learned absolute position embedding (bicubically resized to the input).
        patch_norm: LayerNorm after the patch embedding.
        out_indices: stages to output; each gets a LayerNorm ``norm{i}``.
        frozen_stages: -1 freezes nothing; >= 0 freezes the patch embedding, >= 1 also the absolute
            position embedding, k >= 2 also stages 0..k-2 (parameters and train/eval mode).
        use_checkpoint: activation checkpointing of every block in training.
    """

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if any(not 0 <= i < len(depths) for i in out_indices):
            raise ValueError(f"out_indices {list(out_indices)} must be stage indices in [0, {len(depths)})")
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.num_features: List[int] = [int(embed_dim * 2 ** i) for i in range(self.num_layers)]
        self.strides: List[int] = [_pair(patch_size)[0] * 2 ** i for i in range(self.num_layers)]

        self.patch_embed = PatchEmbed(
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer if patch_norm else None,
        )
        if ape:
            img, patch = _pair(pretrain_img_size), _pair(patch_size)
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, embed_dim, img[0] // patch[0], img[1] // patch[1])
            )
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # Stochastic depth grows linearly with the block's position in the whole network.
        # (Computed on the CPU so that the model can also be built under a "meta" device context.)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(
                BasicLayer(
                    dim=self.num_features[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i]):sum(depths[: i + 1])],
                    norm_layer=norm_layer,
                    downsample=PatchMerging if i < self.num_layers - 1 else None,
                    use_checkpoint=use_checkpoint,
                )
            )
        # Output norms are registered after the stages: the reference state dicts list them last.
        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

        self._freeze_stages()

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            for p in self.patch_embed.parameters():
                p.requires_grad = False
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False
        if self.frozen_stages >= 2:
            self.pos_drop.eval()
            for i in range(self.frozen_stages - 1):
                self.layers[i].eval()
                for p in self.layers[i].parameters():
                    p.requires_grad = False

    def init_weights(self) -> None:
        """The Swin papers' initialisation for training from scratch: truncated normal (std 0.02)
        Linear weights, zero biases, unit LayerNorms. Not called by the constructor: the reference
        models keep PyTorch's default initialisation (their init routine is never invoked) and load
        ImageNet weights instead."""

        def _init(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(_init)

    def no_weight_decay(self) -> Set[str]:
        """Names (module-local) of the parameters usually trained without weight decay: the absolute
        position embedding and the relative position bias tables. Match them against the last
        component of a parameter's name (e.g. as Detectron2's optimizer ``overrides`` do)."""
        return {"absolute_pos_embed", "relative_position_bias_table"}

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """
        Args:
            x: (B, in_chans, H, W) normalised image; any H, W (padded internally).

        Returns:
            One (B, num_features[i], ceil(H / strides[i]), ceil(W / strides[i])) map per entry of
            ``out_indices``, in that order, each through its own ``norm{i}``.
        """
        x = self.patch_embed(x)
        Wh, Ww = x.shape[2:]
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(Wh, Ww), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # (B, Wh*Ww, C)

        outs = {}
        for i, layer in enumerate(self.layers):
            x_out, H, W, x, Wh, Ww = layer(x, Wh, Ww)
            if i in self.out_indices:
                x_out = getattr(self, f"norm{i}")(x_out)
                outs[i] = x_out.view(-1, H, W, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
        return tuple(outs[i] for i in self.out_indices)

    def train(self, mode: bool = True) -> "SwinTransformer":
        """Sets the mode but keeps the frozen stages in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self
