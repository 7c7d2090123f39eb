"""Multi-scale deformable attention: the grid_sample implementation against a slow per-sample bilinear
loop (forward and gradients), gradcheck, and the reference's golden values (spec 4.4)."""
import json
import math
from typing import List, Sequence, Tuple

import pytest
import torch

from conftest import shared_path
from mask2former.modeling.pixel_decoder.ms_deform_attn import MSDeformAttn, ms_deform_attn_core

SHAPES = [(7, 5), (4, 3), (2, 1)]  # odd sizes and a 1-pixel-wide level
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def loop_reference(
    value: torch.Tensor,
    shapes: Sequence[Tuple[int, int]],
    locations: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Obviously-correct deformable attention: for every (batch, query, head, level, point) read the
    value bilinearly at pixel coordinate (x * W - 0.5, y * H - 0.5) from the four surrounding pixels,
    any of them outside the map counting as zero. Differentiable through the fractional parts."""
    B, S, M, D = value.shape
    _, Q, _, L, P, _ = locations.shape
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    rows: List[torch.Tensor] = []
    for b in range(B):
        for q in range(Q):
            heads = []
            for m in range(M):
                acc = value.new_zeros(D)
                for lvl, (H, W) in enumerate(shapes):
                    for p in range(P):
                        x = locations[b, q, m, lvl, p, 0] * W - 0.5
                        y = locations[b, q, m, lvl, p, 1] * H - 0.5
                        x0, y0 = math.floor(x.item()), math.floor(y.item())
                        fx, fy = x - x0, y - y0
                        corners = [
                            (y0, x0, (1 - fy) * (1 - fx)),
                            (y0, x0 + 1, (1 - fy) * fx),
                            (y0 + 1, x0, fy * (1 - fx)),
                            (y0 + 1, x0 + 1, fy * fx),
                        ]
                        for yi, xi, cw in corners:
                            if 0 <= yi < H and 0 <= xi < W:
                                v = value[b, starts[lvl] + yi * W + xi, m]
                                acc = acc + weights[b, q, m, lvl, p] * cw * v
                heads.append(acc)
            rows.append(torch.cat(heads))
    return torch.stack(rows).view(B, Q, M * D)


def random_inputs(shapes, B=2, Q=4, M=2, D=3, P=3, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    S = sum(h * w for h, w in shapes)
    L = len(shapes)
    value = torch.randn(B, S, M, D, generator=g, dtype=dtype)
    # Some locations fall outside [0, 1] to exercise the zero padding.
    locations = torch.rand(B, Q, M, L, P, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(B, Q, M, L, P, generator=g, dtype=dtype)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    to = dict(device=device)
    return (value.to(**to), spatial_shapes.to(**to), level_start_index.to(**to),
            locations.to(**to), weights.to(**to))


@pytest.mark.parametrize("device", DEVICES)
def test_core_matches_loop_reference_forward_and_backward(device):
    value, shapes_t, starts_t, loc, attn = random_inputs(SHAPES, device=device)
    grad_out = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3],
                           generator=torch.Generator().manual_seed(1)).to(device)

    inputs = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    out = ms_deform_attn_core(inputs[0], shapes_t, starts_t, inputs[1], inputs[2])
    out.backward(grad_out)

    ref_inputs = [t.detach().cpu().clone().requires_grad_() for t in (value, loc, attn)]
    ref = loop_reference(ref_inputs[0], SHAPES, ref_inputs[1], ref_inputs[2])
    ref.backward(grad_out.cpu())

    assert out.shape == (2, 4, 2 * 3)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5, atol=1e-5)
    for name, mine, theirs in zip(("value", "sampling_locations", "attention_weights"), inputs, ref_inputs):
        torch.testing.assert_close(mine.grad.cpu(), theirs.grad, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_core_zero_outside_and_pixel_centres():
    """Sampling at a pixel centre returns that pixel; far outside returns 0."""
    H, W = 3, 5
    value = torch.arange(H * W, dtype=torch.float32).view(1, H * W, 1, 1)
    i, j = 2, 3
    loc = torch.tensor([[(j + 0.5) / W, (i + 0.5) / H], [1.5, 0.5], [-0.5, 0.5]]).view(1, 3, 1, 1, 1, 2)
    attn = torch.ones(1, 3, 1, 1, 1)
    out = ms_deform_attn_core(value, torch.tensor([[H, W]]), torch.tensor([0]), loc, attn)
    torch.testing.assert_close(out.view(3), torch.tensor([i * W + j, 0.0, 0.0]))


def test_core_gradcheck_float64():
    value, shapes_t, starts_t, loc, attn = random_inputs(
        [(3, 2), (1, 3)], B=1, Q=2, M=2, D=2, P=2, dtype=torch.float64, seed=3
    )
    args = [t.requires_grad_() for t in (value, loc, attn)]
    assert torch.autograd.gradcheck(
        lambda v, s, a: ms_deform_attn_core(v, shapes_t, starts_t, s, a), args, eps=1e-6, atol=1e-5
    )


def test_core_rejects_inconsistent_shapes():
    value, shapes_t, starts_t, loc, attn = random_inputs(SHAPES)
    with pytest.raises(ValueError, match="tokens"):
        ms_deform_attn_core(value[:, :-1], shapes_t, starts_t, loc, attn)
    with pytest.raises(ValueError, match="level_start_index"):
        ms_deform_attn_core(value, shapes_t, starts_t + 1, loc, attn)
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn_core(value, shapes_t, starts_t, loc, attn[..., :-1])


@pytest.fixture(scope="module")
def golden():
    with open(shared_path("reference", "mask2former", "golden_small.json")) as f:
        return json.load(f)


def test_golden_ms_deform_attn(golden):
    case = golden["ms_deform_attn"]
    module = MSDeformAttn(case["d_model"], case["n_levels"], case["n_heads"], case["n_points"])
    torch.testing.assert_close(
        module.sampling_offsets.bias.detach(), torch.tensor(case["sampling_offsets_bias_at_init"]),
        rtol=1e-5, atol=1e-5,
    )
    state = {k: torch.tensor(v) for k, v in case["params"].items()}
    module.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = module(
            torch.tensor(case["query"]),
            torch.tensor(case["reference_points"]),
            torch.tensor(case["input_flatten"]),
            torch.tensor(case["spatial_shapes"], dtype=torch.long),
            torch.tensor(case["level_start_index"], dtype=torch.long),
        )
    torch.testing.assert_close(out, torch.tensor(case["output"]), rtol=1e-5, atol=1e-5)


def test_golden_default_sampling_offsets_bias_at_init(golden):
    expected = torch.tensor(golden["ms_deform_attn_default_sampling_offsets_bias_at_init"])
    assert expected.numel() == 192  # M=8 heads x L=3 levels x P=4 points x 2
    module = MSDeformAttn(d_model=256, n_levels=3, n_heads=8, n_points=4)
    torch.testing.assert_close(module.sampling_offsets.bias.detach(), expected, rtol=1e-5, atol=1e-5)
    # The other parts of the reference init: query-independent offsets, uniform attention.
    assert module.sampling_offsets.weight.abs().sum() == 0
    assert module.attention_weights.weight.abs().sum() == 0 and module.attention_weights.bias.abs().sum() == 0
    assert module.value_proj.bias.abs().sum() == 0 and module.output_proj.bias.abs().sum() == 0
    # Spec 4.4: head m points along (cos, sin)(2*pi*m/8) scaled to max-norm 1, point p at p + 1.
    bias = module.sampling_offsets.bias.detach().view(8, 3, 4, 2)
    directions = torch.tensor(
        [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)], dtype=torch.float32
    )
    steps = torch.arange(1, 5, dtype=torch.float32).view(1, 1, 4, 1)
    torch.testing.assert_close(bias, directions.view(8, 1, 1, 2) * steps.expand(8, 3, 4, 1), rtol=0, atol=1e-5)


def test_module_points_are_pixel_offsets():
    """With zero offsets weights and bias, sampling is at the reference point; a bias of (1, 0) pixels
    on a level moves the sample by one column of that level."""
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=4, n_levels=2, n_heads=1, n_points=1)
    shapes = [(3, 4), (2, 2)]
    with torch.no_grad():
        m.value_proj.weight.copy_(torch.eye(4))
        m.output_proj.weight.copy_(torch.eye(4))
        m.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # level 0: +1 px in x
        m.attention_weights.bias.copy_(torch.tensor([50.0, -50.0]))  # ~all weight on level 0
    x = torch.randn(1, 16, 4)
    ref = torch.tensor([[(1.5 / 4, 0.5 / 3)] * 2])  # centre of pixel (0, 1) of level 0
    out = m(torch.zeros(1, 1, 4), ref.view(1, 1, 2, 2), x, torch.tensor(shapes), torch.tensor([0, 12]))
    torch.testing.assert_close(out.view(4), x[0, 2], rtol=1e-5, atol=1e-5)  # pixel (0, 2)
