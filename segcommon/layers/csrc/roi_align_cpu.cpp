// RoIAlign on the CPU, forward and backward, multi-threaded: the same results as torchvision's
// `roi_align` / `_roi_align_backward` CPU kernels (see roi_align_fast.py for how it replaces them).
//
//   input  (N, C, H, W)     feature map, any strides (made contiguous)
//   rois   (K, 5)           (batch index, x1, y1, x2, y2) in input-image coordinates
//   output (K, C, PH, PW)
//
// Convention (torchvision's): box coordinates are scaled by `spatial_scale`, then shifted by -0.5
// pixel when `aligned` (pixel centres at integer + 0.5); without `aligned` the box is at least 1 pixel
// wide and high. Each output bin averages a grid of sampling points (`sampling_ratio` per side, or
// ceil(box size / bins) when it is <= 0) at the centres of the grid's cells. A point reads the bilinear
// interpolation of its four neighbours; a point more than one pixel outside the map reads zero, and one
// within a pixel of the border is clamped to it.
//
// Why it is faster than torchvision's kernels: the bilinear neighbours and weights of every sampling
// point depend only on the box, so they are computed once per RoI and reused for all C channels
// (torchvision's backward recomputes them for every channel); the work runs channels last, so every
// neighbour is a contiguous C-vector and the channel loops vectorise; and it is split between threads
// (torchvision's CPU kernels run on one): the forward pass by output bins, the backward pass by
// channel ranges, which own disjoint parts of the input gradient, so no atomics are needed. The input
// gradient comes back with channels-last strides. Products, divisions and the order in which
// contributions are summed follow torchvision's, so results are bitwise equal to its kernels.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

template <typename scalar_t>
struct Sample {
  // Flat index (y * W + x) of the four neighbours and their bilinear weights, computed in the input's
  // precision as torchvision does; `valid` is false (weights zero) for a point outside the map.
  int64_t idx[4];
  scalar_t w[4];
  bool valid;
};

template <typename scalar_t>
struct RoiGrid {
  int64_t batch;
  int64_t count;  // sampling points per bin (at least 1 for the division)
  std::vector<Sample<scalar_t>> samples;  // (PH, PW, grid_h, grid_w), row-major
};

template <typename scalar_t>
inline Sample<scalar_t> sample_at(scalar_t y, scalar_t x, int64_t H, int64_t W) {
  Sample<scalar_t> s;
  if (y < -1.0 || y > H || x < -1.0 || x > W) {
    for (int i = 0; i < 4; ++i) {
      s.idx[i] = 0;
      s.w[i] = 0;
    }
    s.valid = false;
    return s;
  }
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int64_t y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(x);
  int64_t y_high, x_high;
  if (y_low >= H - 1) {
    y_high = y_low = H - 1;
    y = static_cast<scalar_t>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= W - 1) {
    x_high = x_low = W - 1;
    x = static_cast<scalar_t>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const scalar_t ly = y - y_low, lx = x - x_low, hy = 1. - ly, hx = 1. - lx;
  s.idx[0] = y_low * W + x_low;
  s.idx[1] = y_low * W + x_high;
  s.idx[2] = y_high * W + x_low;
  s.idx[3] = y_high * W + x_high;
  s.w[0] = hy * hx;
  s.w[1] = hy * lx;
  s.w[2] = ly * hx;
  s.w[3] = ly * lx;
  s.valid = true;
  return s;
}

template <typename scalar_t>
RoiGrid<scalar_t> roi_grid(const scalar_t* roi, double spatial_scale, int64_t H, int64_t W, int64_t PH, int64_t PW,
                 int64_t sampling_ratio, bool aligned) {
  RoiGrid<scalar_t> g;
  g.batch = static_cast<int64_t>(roi[0]);
  const scalar_t offset = aligned ? 0.5 : 0.0;
  // As torchvision: the scaled corner is computed in double, then rounded to the input's precision.
  const scalar_t start_w = roi[1] * spatial_scale - offset;
  const scalar_t start_h = roi[2] * spatial_scale - offset;
  const scalar_t end_w = roi[3] * spatial_scale - offset;
  const scalar_t end_h = roi[4] * spatial_scale - offset;
  scalar_t roi_w = end_w - start_w, roi_h = end_h - start_h;
  if (!aligned) {
    roi_w = std::max(roi_w, static_cast<scalar_t>(1));
    roi_h = std::max(roi_h, static_cast<scalar_t>(1));
  }
  const scalar_t bin_h = roi_h / static_cast<scalar_t>(PH), bin_w = roi_w / static_cast<scalar_t>(PW);
  const int64_t grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(roi_h / PH));
  const int64_t grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(roi_w / PW));
  g.count = std::max<int64_t>(grid_h * grid_w, 1);
  g.samples.resize(PH * PW * grid_h * grid_w);
  int64_t k = 0;
  for (int64_t ph = 0; ph < PH; ++ph) {
    for (int64_t pw = 0; pw < PW; ++pw) {
      for (int64_t iy = 0; iy < grid_h; ++iy) {
        const scalar_t y = start_h + ph * bin_h +
                           static_cast<scalar_t>(iy + .5f) * bin_h / static_cast<scalar_t>(grid_h);
        for (int64_t ix = 0; ix < grid_w; ++ix) {
          const scalar_t x = start_w + pw * bin_w +
                             static_cast<scalar_t>(ix + .5f) * bin_w / static_cast<scalar_t>(grid_w);
          g.samples[k++] = sample_at(y, x, H, W);
        }
      }
    }
  }
  return g;
}

void check_inputs(const at::Tensor& input, const at::Tensor& rois) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(), "roi_align_cpu: CPU tensors expected");
  TORCH_CHECK(input.dim() == 4, "roi_align_cpu: input must be (N, C, H, W), got ", input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align_cpu: rois must be (K, 5), got ", rois.sizes());
  TORCH_CHECK(input.scalar_type() == rois.scalar_type(), "roi_align_cpu: input and rois must have one dtype");
}

}  // namespace

at::Tensor roi_align_forward(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                             int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_inputs(input_, rois_);
  // Channels last: the four neighbours of a point are four contiguous C-vectors, so the inner loop
  // over channels is a vectorisable multiply-add (free when the input already is channels last).
  const auto input = input_.permute({0, 2, 3, 1}).contiguous();  // (N, H, W, C)
  const auto rois = rois_.contiguous();
  const int64_t C = input_.size(1), H = input_.size(2), W = input_.size(3), K = rois.size(0);
  const int64_t PH = pooled_height, PW = pooled_width;
  auto output = at::empty({K, C, PH, PW}, input.options());
  if (output.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward", [&] {
      const scalar_t* in = input.data_ptr<scalar_t>();
      const scalar_t* r = rois.data_ptr<scalar_t>();
      scalar_t* out = output.data_ptr<scalar_t>();
      for (int64_t k = 0; k < K; ++k) {
        const auto g = roi_grid(r + 5 * k, spatial_scale, H, W, PH, PW, sampling_ratio, aligned);
        const int64_t per_bin = static_cast<int64_t>(g.samples.size()) / (PH * PW);
        const scalar_t count = static_cast<scalar_t>(g.count);
        const scalar_t* image = in + g.batch * H * W * C;
        scalar_t* out_k = out + k * C * PH * PW;
        at::parallel_for(0, PH * PW, 8, [&](int64_t b0, int64_t b1) {
          std::vector<scalar_t> acc(C);
          for (int64_t b = b0; b < b1; ++b) {
            std::fill(acc.begin(), acc.end(), scalar_t(0));
            scalar_t* a = acc.data();
            const Sample<scalar_t>* s = g.samples.data() + b * per_bin;
            for (int64_t j = 0; j < per_bin; ++j, ++s) {
              const scalar_t *v0 = image + s->idx[0] * C, *v1 = image + s->idx[1] * C;
              const scalar_t *v2 = image + s->idx[2] * C, *v3 = image + s->idx[3] * C;
              const scalar_t w0 = s->w[0], w1 = s->w[1], w2 = s->w[2], w3 = s->w[3];
              // Same products and summation order as torchvision: w1*v1 + w2*v2 + w3*v3 + w4*v4.
              for (int64_t c = 0; c < C; ++c) a[c] += w0 * v0[c] + w1 * v1[c] + w2 * v2[c] + w3 * v3[c];
            }
            // Written straight into the (K, C, PH, PW) output: consecutive bins fill the same C
            // cache lines, so no separate transposing pass is needed.
            for (int64_t c = 0; c < C; ++c) out_k[c * PH * PW + b] = a[c] / count;
          }
        });
      }
    });
  }
  return output;  // (K, C, PH, PW) contiguous, as torchvision returns it: callers may view() it
}

at::Tensor roi_align_backward(const at::Tensor& grad_, const at::Tensor& rois_, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                              int64_t height, int64_t width, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(grad_.device().is_cpu() && rois_.device().is_cpu(), "roi_align_cpu: CPU tensors expected");
  TORCH_CHECK(rois_.dim() == 2 && rois_.size(1) == 5, "roi_align_cpu: rois must be (K, 5), got ", rois_.sizes());
  const int64_t C = channels, H = height, W = width, K = rois_.size(0);
  const int64_t PH = pooled_height, PW = pooled_width;
  TORCH_CHECK(grad_.dim() == 4 && grad_.size(0) == K && grad_.size(1) == C && grad_.size(2) == PH &&
                  grad_.size(3) == PW,
              "roi_align_cpu: grad must be (K, C, PH, PW), got ", grad_.sizes());
  const auto grad = grad_.permute({0, 2, 3, 1}).contiguous();  // (K, PH, PW, C)
  const auto rois = rois_.to(grad.scalar_type()).contiguous();
  auto grad_input = at::zeros({batch_size, H, W, C}, grad.options());
  if (K > 0 && grad.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward", [&] {
      const scalar_t* go = grad.data_ptr<scalar_t>();
      const scalar_t* r = rois.data_ptr<scalar_t>();
      scalar_t* gi = grad_input.data_ptr<scalar_t>();
      for (int64_t k = 0; k < K; ++k) {
        const auto g = roi_grid(r + 5 * k, spatial_scale, H, W, PH, PW, sampling_ratio, aligned);
        const int64_t per_bin = static_cast<int64_t>(g.samples.size()) / (PH * PW);
        const scalar_t count = static_cast<scalar_t>(g.count);
        scalar_t* image = gi + g.batch * H * W * C;
        // Threads own channel ranges, hence disjoint parts of the input gradient.
        at::parallel_for(0, C, 16, [&](int64_t c0, int64_t c1) {
          const Sample<scalar_t>* s = g.samples.data();
          for (int64_t b = 0; b < PH * PW; ++b) {
            const scalar_t* gb = go + (k * PH * PW + b) * C;
            for (int64_t j = 0; j < per_bin; ++j, ++s) {
              if (!s->valid) continue;
              // torchvision's rounding: (grad * w) / count, corners in this order.
              for (int i = 0; i < 4; ++i) {
                scalar_t* dst = image + s->idx[i] * C;
                const scalar_t w = s->w[i];
                for (int64_t c = c0; c < c1; ++c) dst[c] += gb[c] * w / count;
              }
            }
          }
        });
      }
    });
  }
  // (N, C, H, W) with channels-last strides: autograd accumulates it into the feature map's gradient
  // whatever the layout, so the transposing copy is left out.
  return grad_input.permute({0, 3, 1, 2});
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &roi_align_forward, "RoIAlign forward (CPU)");
  m.def("backward", &roi_align_backward, "RoIAlign backward (CPU)");
}
