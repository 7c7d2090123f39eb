// Multi-scale deformable attention on the CPU: forward and backward of the sampling-and-weighting
// core (see ms_deform_attn.py, ms_deform_attn_core, for the maths and the coordinate convention).
//
//   value              (B, S, M, D)       per-head values of all levels, level after level, row-major
//   spatial_shapes     (L, 2) int64       (H_l, W_l)
//   level_start_index  (L,) int64         first token of each level in S
//   sampling_locations (B, Q, M, L, P, 2) normalised (x, y); pixel (i, j) has centre ((j+.5)/W, (i+.5)/H)
//   attention_weights  (B, Q, M, L, P)
//   output             (B, Q, M * D)
//
// A location reads the bilinear interpolation of the four nearest pixel centres at the continuous
// pixel coordinate (x * W - 0.5, y * H - 0.5); corners outside the map read zero (grid_sample with
// align_corners=False and zero padding). The innermost loop runs over the D channels of one head,
// which are contiguous in `value`, so the compiler vectorises the gathers and the accumulation.
//
// Parallelism: the forward pass splits the (b, q) pairs between threads. The backward pass splits
// the (b, m) pairs: every write to grad_value for image b, head m then comes from one thread, so no
// atomics are needed, and each (b, q, m, l, p) gradient of the locations and weights has one owner.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

struct Corners {
  // Flat token index (within the level) and bilinear weight of the four neighbours; index -1 when
  // the neighbour lies outside the map.
  int64_t idx[4];
  double w[4];
  // Fractional parts, for the gradient with respect to the location.
  double lx, ly;
  bool any;
};

template <typename scalar_t>
inline Corners corners_of(scalar_t loc_x, scalar_t loc_y, int64_t H, int64_t W) {
  Corners c;
  const double x = static_cast<double>(loc_x) * W - 0.5;
  const double y = static_cast<double>(loc_y) * H - 0.5;
  c.any = x > -1 && y > -1 && x < W && y < H;
  if (!c.any) return c;
  const double fx = std::floor(x), fy = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const int64_t x1 = x0 + 1, y1 = y0 + 1;
  c.lx = x - fx;
  c.ly = y - fy;
  const double hx = 1 - c.lx, hy = 1 - c.ly;
  const bool vx0 = x0 >= 0, vx1 = x1 < W, vy0 = y0 >= 0, vy1 = y1 < H;
  c.idx[0] = (vy0 && vx0) ? y0 * W + x0 : -1;
  c.idx[1] = (vy0 && vx1) ? y0 * W + x1 : -1;
  c.idx[2] = (vy1 && vx0) ? y1 * W + x0 : -1;
  c.idx[3] = (vy1 && vx1) ? y1 * W + x1 : -1;
  c.w[0] = hy * hx;
  c.w[1] = hy * c.lx;
  c.w[2] = c.ly * hx;
  c.w[3] = c.ly * c.lx;
  return c;
}

template <typename scalar_t>
struct ForwardArgs {
  const scalar_t* v;
  const scalar_t* loc;
  const scalar_t* attn;
  scalar_t* out;
  const int64_t* shapes;
  const int64_t* starts;
  int64_t Q, S, M, D, L, P;
};

// Output rows [begin, end) of the (b, q) pairs. kD > 0 fixes the head width D at compile time; the
// sum over the samples of a head is accumulated in `acc` and written once.
template <typename scalar_t, int64_t kD>
void forward_rows(const ForwardArgs<scalar_t>& a, int64_t begin, int64_t end) {
  const int64_t D = kD > 0 ? kD : a.D;
  const int64_t M = a.M, L = a.L, P = a.P;
  std::vector<scalar_t> heap_acc(kD > 0 ? 0 : D);
  scalar_t stack_acc[kD > 0 ? kD : 1];
  scalar_t* __restrict__ acc = kD > 0 ? stack_acc : heap_acc.data();
  for (int64_t bq = begin; bq < end; ++bq) {
    const int64_t b = bq / a.Q;
    for (int64_t m = 0; m < M; ++m) {
      const int64_t head = bq * M + m;  // index of (b, q, m) in the location/weight arrays
      for (int64_t d = 0; d < D; ++d) acc[d] = 0;
      for (int64_t l = 0; l < L; ++l) {
        const int64_t H = a.shapes[2 * l], W = a.shapes[2 * l + 1];
        // value[b, starts[l] + token, m, :]
        const scalar_t* vl = a.v + ((b * a.S + a.starts[l]) * M + m) * D;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t k = (head * L + l) * P + p;
          const Corners c = corners_of(a.loc[2 * k], a.loc[2 * k + 1], H, W);
          if (!c.any) continue;
          const scalar_t w_attn = a.attn[k];
          for (int corner = 0; corner < 4; ++corner) {
            if (c.idx[corner] < 0) continue;
            const scalar_t w = w_attn * static_cast<scalar_t>(c.w[corner]);
            const scalar_t* __restrict__ vc = vl + c.idx[corner] * M * D;
            for (int64_t d = 0; d < D; ++d) acc[d] += w * vc[d];
          }
        }
      }
      scalar_t* __restrict__ o = a.out + head * D;
      for (int64_t d = 0; d < D; ++d) o[d] = acc[d];
    }
  }
}

void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  TORCH_CHECK(!value.is_cuda(), "ms_deform_attn_cpu: tensors must be on the CPU");
  TORCH_CHECK(value.dim() == 4, "value must be (B, S, M, D)");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be (B, Q, M, L, P, 2)");
  TORCH_CHECK(attention_weights.dim() == 5, "attention_weights must be (B, Q, M, L, P)");
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2, "spatial_shapes must be (L, 2)");
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(value.scalar_type() == sampling_locations.scalar_type() &&
                  value.scalar_type() == attention_weights.scalar_type(),
              "value, sampling_locations and attention_weights must have one dtype");
}

}  // namespace

at::Tensor ms_deform_attn_forward(const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
                                  const at::Tensor& level_start_index_in, const at::Tensor& loc_in,
                                  const at::Tensor& attn_in) {
  check_inputs(value_in, spatial_shapes_in, level_start_index_in, loc_in, attn_in);
  const auto value = value_in.contiguous();
  const auto shapes = spatial_shapes_in.contiguous();
  const auto starts = level_start_index_in.contiguous();
  const auto loc = loc_in.contiguous();
  const auto attn = attn_in.contiguous();
  const int64_t B = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Q = loc.size(1), L = loc.size(3), P = loc.size(4);
  auto output = at::empty({B, Q, M * D}, value.options());
  const int64_t* shp = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();

  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* lc = loc.data_ptr<scalar_t>();
    const scalar_t* aw = attn.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const ForwardArgs<scalar_t> args{v, lc, aw, out, shp, st, Q, S, M, D, L, P};
    // A compile-time head width lets the compiler keep the accumulator in vector registers.
    at::parallel_for(0, B * Q, 16, [&](int64_t begin, int64_t end) {
      if (D == 32) {
        forward_rows<scalar_t, 32>(args, begin, end);
      } else if (D == 64) {
        forward_rows<scalar_t, 64>(args, begin, end);
      } else {
        forward_rows<scalar_t, 0>(args, begin, end);
      }
    });
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_backward(const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
                                                const at::Tensor& level_start_index_in, const at::Tensor& loc_in,
                                                const at::Tensor& attn_in, const at::Tensor& grad_output_in) {
  check_inputs(value_in, spatial_shapes_in, level_start_index_in, loc_in, attn_in);
  const auto value = value_in.contiguous();
  const auto shapes = spatial_shapes_in.contiguous();
  const auto starts = level_start_index_in.contiguous();
  const auto loc = loc_in.contiguous();
  const auto attn = attn_in.contiguous();
  const auto grad_output = grad_output_in.contiguous();
  const int64_t B = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Q = loc.size(1), L = loc.size(3), P = loc.size(4);
  TORCH_CHECK(grad_output.size(0) == B && grad_output.size(1) == Q && grad_output.size(2) == M * D,
              "grad_output must be (B, Q, M * D)");
  auto grad_value = at::zeros_like(value);
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  const int64_t* shp = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();

  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* lc = loc.data_ptr<scalar_t>();
    const scalar_t* aw = attn.data_ptr<scalar_t>();
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    scalar_t* gv = grad_value.data_ptr<scalar_t>();
    scalar_t* gl = grad_loc.data_ptr<scalar_t>();
    scalar_t* ga = grad_attn.data_ptr<scalar_t>();
    at::parallel_for(0, B * M, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> sampled(D), dx(D), dy(D);
      for (int64_t bm = begin; bm < end; ++bm) {
        const int64_t b = bm / M, m = bm % M;
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t head = (b * Q + q) * M + m;
          const scalar_t* g = go + head * D;
          for (int64_t l = 0; l < L; ++l) {
            const int64_t H = shp[2 * l], W = shp[2 * l + 1];
            const int64_t base = ((b * S + st[l]) * M + m) * D;
            for (int64_t p = 0; p < P; ++p) {
              const int64_t k = (head * L + l) * P + p;
              const Corners c = corners_of(lc[2 * k], lc[2 * k + 1], H, W);
              if (!c.any) continue;
              const scalar_t a = aw[k];
              const scalar_t lx = static_cast<scalar_t>(c.lx), ly = static_cast<scalar_t>(c.ly);
              const scalar_t hx = 1 - lx, hy = 1 - ly;
              // d(bilinear)/dx = hy * (v01 - v00) + ly * (v11 - v10); d/dy = hx * (v10 - v00) + lx * (v11 - v01),
              // written per corner: the coefficient of corner n in d/dx and d/dy.
              const scalar_t cx[4] = {-hy, hy, -ly, ly};
              const scalar_t cy[4] = {-hx, -lx, hx, lx};
              std::fill(sampled.begin(), sampled.end(), scalar_t(0));
              std::fill(dx.begin(), dx.end(), scalar_t(0));
              std::fill(dy.begin(), dy.end(), scalar_t(0));
              for (int corner = 0; corner < 4; ++corner) {
                if (c.idx[corner] < 0) continue;
                const scalar_t w = static_cast<scalar_t>(c.w[corner]);
                const scalar_t* vc = v + base + c.idx[corner] * M * D;
                scalar_t* gvc = gv + base + c.idx[corner] * M * D;
                const scalar_t wa = w * a, ccx = cx[corner], ccy = cy[corner];
                for (int64_t d = 0; d < D; ++d) {
                  sampled[d] += w * vc[d];
                  dx[d] += ccx * vc[d];
                  dy[d] += ccy * vc[d];
                  gvc[d] += wa * g[d];
                }
              }
              scalar_t s_attn = 0, s_x = 0, s_y = 0;
              for (int64_t d = 0; d < D; ++d) {
                s_attn += g[d] * sampled[d];
                s_x += g[d] * dx[d];
                s_y += g[d] * dy[d];
              }
              ga[k] = s_attn;
              // The pixel coordinate is loc * size - 0.5.
              gl[2 * k] = a * s_x * static_cast<scalar_t>(W);
              gl[2 * k + 1] = a * s_y * static_cast<scalar_t>(H);
            }
          }
        }
      }
    });
  });
  return {grad_value, grad_loc, grad_attn};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "multi-scale deformable attention, forward (CPU)");
  m.def("backward", &ms_deform_attn_backward, "multi-scale deformable attention, backward (CPU)");
}
