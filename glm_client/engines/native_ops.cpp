// The int4 matmul (int4_matmul.c) as a torch operator, torch.ops.glm_workbench.int4_matmul.
//
// Why an operator and not a ctypes call like the other kernels: the decode steps' layers are
// TorchScript functions (decode_layers.py), which run without the GIL and can call operators
// only. Its schema is defined in packed.py, so the functions script even where this file is not
// built (they then never reach it: the weights stay in torch's int4 layout).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>

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

}  // namespace

TORCH_LIBRARY_IMPL(glm_workbench, CPU, library) { library.impl("int4_matmul", &int4_matmul_op); }
