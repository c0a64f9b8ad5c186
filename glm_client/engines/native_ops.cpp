// Torch operators of the decode steps' layers: the int4 matmul (int4_matmul.c), and the small ops
// between the matmuls fused, an RMSNorm, the rotary embedding with the split into queries, keys
// and values, and SiLU(gate) * up (torch.ops.glm_workbench.*).
//
// Why operators and not ctypes calls like the other kernels: the decode steps' layers are
// TorchScript functions (decode_layers.py), which run without the GIL and can call operators
// only. Their schemas are defined in packed.py and decode_layers.py, so the functions script
// even where this file is not built (they then never reach it).
//
// Why fused: between its matmuls a layer ran ~25 torch ops on a few rows (conversions, slices,
// a composite RMSNorm of 8 ops), each costing more in dispatch than in arithmetic. Each op here
// rounds where torch's ops round (to the model's dtype after each step), so the rotary embedding
// is torch's bit for bit; the RMSNorm's sum and SiLU's exp differ from torch's in the last float bits.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

extern "C" int int4_matmul(int threads, int rows, int out, int in, const float *x, const uint8_t *weight,
                           const float *scales, const float *mins, float *y);

namespace {

// x: [rows, in], any float dtype; weight: uint8 [out, in / 2]; scales: float32 [2, out, in / 32]
// (the groups' scales, then their mins). Returns [rows, out] in x's dtype.
at::Tensor int4_matmul_op(const at::Tensor &x, const at::Tensor &weight, const at::Tensor &scales) {
    TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && scales.dim() == 3, "int4_matmul takes 2-d x and weight, 3-d scales");
    const int64_t rows = x.size(0), in = x.size(1), out = weight.size(0);
    TORCH_CHECK(in % 32 == 0 && weight.size(1) * 2 == in, "int4_matmul: x's width must be the weight's, a multiple of 32");
    TORCH_CHECK(weight.scalar_type() == at::kByte && weight.is_contiguous(), "int4_matmul takes contiguous uint8 weights");
    TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.size(0) == 2 &&
                    scales.size(1) == out && scales.size(2) == in / 32,
                "int4_matmul takes contiguous float32 scales and mins, [2, out, in / 32]");
    at::Tensor input = x.to(at::kFloat).contiguous();
    at::Tensor y = at::empty({rows, out}, input.options());
    const float *scale = scales.data_ptr<float>();
    int4_matmul(at::get_num_threads(), rows, out, in, input.data_ptr<float>(), weight.data_ptr<uint8_t>(), scale,
                scale + out * (in / 32), y.data_ptr<float>());
    return y.to(x.scalar_type());
}

// Each product rounds before it is summed, as in torch's separate ops: no fused multiply-adds
// (which -march=native would let gcc make of a float32 model's `x * cos + partner * sin`).
#pragma GCC optimize("fp-contract=off")

// Rows per thread of the fused ops: a decode step's few rows stay on one thread (a row is computed
// alike on any thread, so the thread count changes no result).
int64_t grain(int64_t width) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(width, 1)); }

// weight * RMSNorm(x) as transformers computes it: in float32, rounded to x's dtype, then scaled.
at::Tensor rms_norm_op(const at::Tensor &x_in, const at::Tensor &weight_in, double eps) {
    TORCH_CHECK(x_in.dim() == 2 && weight_in.dim() == 1 && weight_in.size(0) == x_in.size(1) &&
                    weight_in.scalar_type() == x_in.scalar_type(),
                "rms_norm takes x [rows, width] and a weight [width] of x's dtype");
    const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
    at::Tensor y = at::empty_like(x);
    const int64_t width = x.size(1);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm", [&] {
        const scalar_t *xs = x.data_ptr<scalar_t>(), *w = weight.data_ptr<scalar_t>();
        scalar_t *ys = y.data_ptr<scalar_t>();
        at::parallel_for(0, x.size(0), grain(width), [&](int64_t begin, int64_t end) {
            for (int64_t row = begin; row < end; row++) {
                const scalar_t *in = xs + row * width;
                float sums[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // eight lanes, summed in a fixed order
                int64_t i = 0;
                for (; i + 8 <= width; i += 8)
                    for (int lane = 0; lane < 8; lane++) sums[lane] += float(in[i + lane]) * float(in[i + lane]);
                for (; i < width; i++) sums[i % 8] += float(in[i]) * float(in[i]);
                const float total = ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]));
                const float inverse = 1.0f / std::sqrt(total / float(width) + float(eps));
                scalar_t *out = ys + row * width;
                for (i = 0; i < width; i++) out[i] = scalar_t(float(w[i]) * float(scalar_t(float(in[i]) * inverse)));
            }
        });
    });
    return y;
}

// The rotary embedding of the queries and keys in `projected` ([rows, (heads + 2 kv_heads) * dim]:
// queries, keys, values), as torch's `qk * cos + rotate_half(qk) * sin` rounds it. Returns the
// queries in float32 times `scale` ([rows, kv_heads, group, dim]: what the attention reads), and
// the keys and values ([rows, kv_heads, dim]), all contiguous.
std::tuple<at::Tensor, at::Tensor, at::Tensor> rotary_split_op(const at::Tensor &projected_in, const at::Tensor &cos_in,
                                                                const at::Tensor &sin_in, int64_t heads,
                                                                int64_t kv_heads, double scale) {
    const at::Tensor projected = projected_in.contiguous();
    const int64_t rows = projected.size(0), dim = cos_in.size(-1), half = dim / 2;
    TORCH_CHECK(projected.dim() == 2 && heads % kv_heads == 0 && dim % 2 == 0 &&
                    projected.size(1) == (heads + 2 * kv_heads) * dim,
                "rotary_split takes [rows, (heads + 2 kv_heads) * dim] projections");
    const at::Tensor cos = cos_in.reshape({rows, dim}).contiguous(), sin = sin_in.reshape({rows, dim}).contiguous();
    TORCH_CHECK(cos.scalar_type() == projected.scalar_type() && sin.scalar_type() == projected.scalar_type(),
                "rotary_split takes cos and sin in the projections' dtype, one row each");
    at::Tensor queries = at::empty({rows, kv_heads, heads / kv_heads, dim}, projected.options().dtype(at::kFloat));
    at::Tensor keys = at::empty({rows, kv_heads, dim}, projected.options());
    at::Tensor values = at::empty({rows, kv_heads, dim}, projected.options());
    const int64_t width = projected.size(1);
    const float query_scale = float(scale);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, projected.scalar_type(), "rotary_split", [&] {
        const scalar_t *in = projected.data_ptr<scalar_t>(), *cs = cos.data_ptr<scalar_t>(), *sn = sin.data_ptr<scalar_t>();
        float *q = queries.data_ptr<float>();
        scalar_t *k = keys.data_ptr<scalar_t>(), *v = values.data_ptr<scalar_t>();
        at::parallel_for(0, rows, grain(width), [&](int64_t begin, int64_t end) {
            for (int64_t row = begin; row < end; row++) {
                const scalar_t *c = cs + row * dim, *s = sn + row * dim;
                for (int64_t head = 0; head < heads + kv_heads; head++) {
                    const scalar_t *x = in + row * width + head * dim;
                    for (int64_t i = 0; i < dim; i++) {
                        // rotate_half(x)[i]: -x[i + half] in the first half, x[i - half] in the second
                        const float partner = i < half ? -float(x[i + half]) : float(x[i - half]);
                        const scalar_t rotated = scalar_t(float(scalar_t(float(x[i]) * float(c[i]))) +
                                                          float(scalar_t(partner * float(s[i]))));
                        if (head < heads)
                            q[(row * heads + head) * dim + i] = float(rotated) * query_scale;
                        else
                            k[(row * kv_heads + head - heads) * dim + i] = rotated;
                    }
                }
                const scalar_t *value_in = in + row * width + (heads + kv_heads) * dim;
                std::copy(value_in, value_in + kv_heads * dim, v + row * kv_heads * dim);
            }
        });
    });
    return {queries, keys, values};
}

// SiLU(gate) * up of `gated` ([rows, 2 * intermediate]: gates, then ups), rounded as torch's two ops.
at::Tensor silu_mul_op(const at::Tensor &gated_in) {
    TORCH_CHECK(gated_in.dim() == 2 && gated_in.size(1) % 2 == 0, "silu_mul takes [rows, 2 * intermediate]");
    const at::Tensor gated = gated_in.contiguous();
    const int64_t rows = gated.size(0), width = gated.size(1) / 2;
    at::Tensor y = at::empty({rows, width}, gated.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gated.scalar_type(), "silu_mul", [&] {
        const scalar_t *in = gated.data_ptr<scalar_t>();
        scalar_t *out = y.data_ptr<scalar_t>();
        at::parallel_for(0, rows, grain(width), [&](int64_t begin, int64_t end) {
            for (int64_t row = begin; row < end; row++) {
                const scalar_t *gate = in + row * 2 * width, *up = gate + width;
                for (int64_t i = 0; i < width; i++) {
                    const float g = float(gate[i]);
                    out[row * width + i] = scalar_t(float(scalar_t(g / (1.0f + std::exp(-g)))) * float(up[i]));
                }
            }
        });
    });
    return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(glm_workbench, CPU, library) {
    library.impl("int4_matmul", &int4_matmul_op);
    library.impl("rms_norm", &rms_norm_op);
    library.impl("rotary_split", &rotary_split_op);
    library.impl("silu_mul", &silu_mul_op);
}
