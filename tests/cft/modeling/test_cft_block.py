"""One CFT block (``cft/modeling/cft_block.py``) against a direct implementation of its formulas.

* The block's output and class-mask logits equal a loop-based re-implementation written here from the
  definition (cft.md 2.4): channel LayerNorms; M = W2 (W1 Xn) with a grouped W1; spatial softmax of
  M per class; class embeddings E = sum_n softmax(M)_n A_n; keys/values from one Linear; per-head
  attention weights softmax over the K tokens of the *negated* scaled dot products (the reference's
  ``rowmax(S) - S``); output projection; residual with the un-normalised query; Mix-FFN residual.
* The sign convention: with one class token the output is the projected value for either sign;
  with two tokens at scaled similarities (s, s + d) the weight of the first is sigmoid(d).
* ``NEGATE_ATTN_LOGITS False`` with negated key rows (the converter's ``--standard-sign``)
  reproduces the reference-sign block exactly.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from cft.modeling.cft_block import CFTBlock, CategoryFeatureTransformation


def _ln(x, norm):
    """Per-pixel LayerNorm over channels written out: (x - mean) / sqrt(var + eps) * w + b."""
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


def _grouped_1x1(x, weight, groups):
    """A bias-free grouped 1x1 conv as per-group matrix products: (B, C, N) -> (B, C_out, N)."""
    c_in, c_out = x.shape[1], weight.shape[0]
    gi, go = c_in // groups, c_out // groups
    outs = [weight[g * go:(g + 1) * go, :, 0, 0] @ x[:, g * gi:(g + 1) * gi] for g in range(groups)]
    return torch.cat(outs, dim=1)


def reference_block(block: CFTBlock, low: torch.Tensor, high: torch.Tensor, groups: int, heads: int):
    """The block's definition, one head and one pixel-row at a time. Returns (out, mask)."""
    ca = block.cross_attn
    b, c, hq, wq = low.shape
    _, _, hc, wc = high.shape
    d = c // heads
    qn, xn = _ln(low, block.norm_low), _ln(high, block.norm_high)

    # Category feature embedding.
    x_flat = xn.flatten(2)  # (B, C, N)
    mask = ca.kv.learner[1].weight[:, :, 0, 0] @ _grouped_1x1(x_flat, ca.kv.learner[0].weight, groups)  # (B, K, N)
    weights = torch.exp(mask - mask.max(dim=2, keepdim=True).values)
    weights = weights / weights.sum(dim=2, keepdim=True)  # softmax over positions, per class
    aligned = _grouped_1x1(x_flat, ca.kv.conv.weight, groups)  # (B, C, N)
    embed = torch.einsum("bkn,bcn->bkc", weights, aligned)  # (B, K, C)
    kv = embed @ ca.kv.embed.weight.T + ca.kv.embed.bias  # (B, K, 2C)
    keys, values = kv[..., :c], kv[..., c:]

    # Category feature transformation.
    q = ca.q.depthwise_conv.conv(qn)
    q = ca.q.pointwise_conv.conv(q).flatten(2)  # (B, C, HW)
    out = torch.zeros(b, c, hq * wq)
    for bi in range(b):
        for t in range(heads):
            sl = slice(t * d, (t + 1) * d)
            s = q[bi, sl].T @ keys[bi, :, sl].T / math.sqrt(d)  # (HW, K)
            s = s.max(dim=1, keepdim=True).values - s  # the reference's "stable training" line
            a = torch.exp(s - s.max(dim=1, keepdim=True).values)
            a = a / a.sum(dim=1, keepdim=True)
            out[bi, sl] = (a @ values[bi, :, sl]).T
    out = ca.proj(out.reshape(b, c, hq, wq))
    y = out + low
    z = block.mlp[4](F.gelu(block.mlp[1](block.mlp[0](_ln(y, block.norm_mlp))))) + y
    return z, mask.reshape(b, -1, hc, wc)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("heads, groups", [(4, 4), (2, 4)])
def test_block_matches_direct_formula(heads, groups):
    torch.manual_seed(0)
    c, k = 32, 5
    block = CFTBlock(c, heads, k, groups, mlp_ratio=2).eval()
    _randomise(block, 1)  # non-trivial LayerNorm affines and biases too
    low, high = torch.randn(2, c, 6, 7), torch.randn(2, c, 3, 4)
    with torch.no_grad():
        out, mask = block(low, high)
        ref_out, ref_mask = reference_block(block, low, high, groups, heads)
    assert out.shape == (2, c, 6, 7) and mask.shape == (2, k, 3, 4)
    torch.testing.assert_close(mask, ref_mask, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)


def _single_head_attention(k_tokens: int, negate: bool = True) -> CategoryFeatureTransformation:
    ca = CategoryFeatureTransformation(4, 1, k_tokens, 1, negate_logits=negate).eval()
    _randomise(ca, 2)
    return ca


def test_single_token_gives_projected_value_for_either_sign():
    """One class token: softmax over one entry is 1, so every pixel gets proj(value)."""
    torch.manual_seed(0)
    for negate in (True, False):
        ca = _single_head_attention(1, negate)
        query, context = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 2, 2)
        with torch.no_grad():
            out, _ = ca(query, context)
            _, kv = ca.kv(context)
            expected = ca.proj(kv[0, 0, 4:].reshape(1, 4, 1, 1).expand(1, 4, 3, 3))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


class _FixedTokens(torch.nn.Module):
    """Stands in for the class-embedding module: returns given (K, 2C) keys/values."""

    def __init__(self, kv: torch.Tensor):
        super().__init__()
        self.kv = kv

    def forward(self, x):
        return torch.zeros(x.shape[0], self.kv.shape[0], *x.shape[-2:]), self.kv.expand(x.shape[0], -1, -1)


@pytest.mark.parametrize("negate, sign", [(True, 1.0), (False, -1.0)])
def test_two_tokens_weight_is_sigmoid_of_similarity_gap(negate, sign):
    """Scaled similarities (s, s + delta) = (0, delta): the reference (negated logits) weights the
    first token with sigmoid(delta), i.e. it favours the *less* similar token; the standard sign
    gives sigmoid(-delta)."""
    c = 4
    ca = CategoryFeatureTransformation(c, 1, 2, 1, negate_logits=negate).eval()
    u = torch.tensor([1.0, -2.0, 0.5, 3.0])
    keys = torch.stack([torch.zeros(c), u])  # token 0: similarity 0; token 1: q.u / sqrt(c)
    values = torch.stack([torch.eye(c)[0], torch.zeros(c)])  # output channel 0 = weight of token 0
    ca.kv = _FixedTokens(torch.cat([keys, values], dim=1)[None])
    with torch.no_grad():  # identity query projection and output projection
        ca.q.depthwise_conv.conv.weight.zero_()
        ca.q.depthwise_conv.conv.weight[:, 0, 1, 1] = 1.0
        ca.q.depthwise_conv.conv.bias.zero_()
        ca.q.pointwise_conv.conv.weight.copy_(torch.eye(c)[:, :, None, None])
        ca.q.pointwise_conv.conv.bias.zero_()
        ca.proj.weight.copy_(torch.eye(c)[:, :, None, None])
        ca.proj.bias.zero_()
        query = torch.randn(1, c, 3, 5)
        out, _ = ca(query, torch.zeros(1, c, 2, 2))
    delta = torch.einsum("c,bchw->bhw", u, query) / math.sqrt(c)
    torch.testing.assert_close(out[:, 0], torch.sigmoid(sign * delta), rtol=1e-5, atol=1e-6)


def test_standard_sign_with_negated_keys_equals_reference_sign():
    torch.manual_seed(0)
    ref = CFTBlock(16, 4, 3, 4, mlp_ratio=2, negate_logits=True).eval()
    _randomise(ref, 3)
    std = CFTBlock(16, 4, 3, 4, mlp_ratio=2, negate_logits=False).eval()
    std.load_state_dict(ref.state_dict())
    with torch.no_grad():
        std.cross_attn.kv.embed.weight[:16] *= -1
        std.cross_attn.kv.embed.bias[:16] *= -1
        low, high = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 2, 2)
        torch.testing.assert_close(std(low, high)[0], ref(low, high)[0], rtol=1e-5, atol=1e-5)
