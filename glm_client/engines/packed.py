"""Weight-only quantized linear layers for CPU decoding: y = x @ W.T with W kept small.

Decoding one token reads every weight once, so on a CPU its speed is set by how
many bytes the weights take and how well the matmul kernel streams them. Measured
on the 2-core CI machine (one thread, all SmolLM2-135M shapes, bench/bench_engine.py
prints the end-to-end figures): bf16 `F.linear` 33 ms per token, int8
`_weight_int8pack_mm` 18 ms, int4 `_weight_int4pack_mm_for_cpu` 8 ms.

int4 uses asymmetric 32-wide groups, the layout of GGUF's Q4_1: weights that came
from a Q4_1 file (the embedded model) are reproduced up to bf16 rounding, so the
quantization costs them nothing.

Each packed kernel computes a row the same whatever the number of rows (checked
bit for bit here), so decoding in a batch with other sessions changes no output.
The packed kernels are made for few rows; a prompt's many rows run on the model's
own bf16 weights (`dense`), 2-3x faster there (fast_llama.py). A CPU without bf16
instructions (AVX2 but no AVX512-BF16 or AMX, as most laptops) runs a bf16 matmul
about 8x slower than float32 (measured on an AVX2 EPYC: 47 vs 5.7 ms for 512 rows of
SmolLM2's gate/up), so there the dense weights are a float32 copy (`dense_dtype`).
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F

INT4_GROUP = 32  # weights per scale/offset pair, as in GGUF Q4_1
INT4_LEVELS = 15
INT8_LEVELS = 127
WEIGHT_BITS = (16, 8, 4)  # 16: the model's own dtype


class PackedLinear:
    """One linear layer whose weight is kept in `bits` bits (16: as it is)."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, bits: int, dense_dtype: torch.dtype | None = None
    ) -> None:
        if bits not in WEIGHT_BITS:
            raise ValueError(f"bits must be one of {WEIGHT_BITS}, got {bits}")
        if bits == 4 and weight.shape[1] % INT4_GROUP:
            bits = 8  # the int4 kernel needs whole groups along the input dimension
        self.bits = bits
        self.bias = bias.detach() if bias is not None else None
        self.out_features, self.in_features = weight.shape
        self.weight = weight.detach()  # bits 16: shared with the model, not copied
        # for many rows at once (dense): the model's own weight, not a copy, unless another dtype is faster here
        self.dense_copied = dense_dtype not in (None, weight.dtype)
        self.dense_weight = self.weight.to(dense_dtype) if self.dense_copied else self.weight
        self.scales: torch.Tensor | None = None
        if bits == 8:
            self.weight, self.scales = quantize_int8(self.weight)
        elif bits == 4:
            self.weight, self.scales = quantize_int4(self.weight)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self.parts())

    def parts(self) -> LinearParts:
        """The layer as `packed_linear` takes it, also inside TorchScript (decode_layers.py)."""
        return self.weight, self.scales, self.bias, INT4_GROUP if self.bits == 4 else 0

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """y = x @ W.T on the unpacked weight: faster than the packed kernels from about 8 rows on."""
        y = F.linear(x.to(self.dense_weight.dtype), self.dense_weight).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def packed_nbytes(self) -> int:
        """Bytes beyond the model's own weights."""
        packed = 0 if self.scales is None else self.weight.nbytes + self.scales.nbytes
        return packed + (self.dense_weight.nbytes if self.dense_copied else 0)


# weight, scales (None: the model's own weight), bias, and the weights a scale covers (0: a
# whole row, int8; else int4's groups)
LinearParts = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, int]


def packed_linear(x: torch.Tensor, parts: LinearParts) -> torch.Tensor:
    """y = x @ W.T (+ bias) on a layer's packed weight; TorchScript compiles it as it is (no globals)."""
    weight, scales, bias, group = parts
    if scales is None:
        y = F.linear(x, weight)
    elif group == 0:
        y = torch.ops.aten._weight_int8pack_mm(x, weight, scales)
    else:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, weight, group, scales)
    return y if bias is None else y + bias


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / INT8_LEVELS).clamp(min=1e-12)
    q = torch.round(w / scales[:, None]).clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8).contiguous()
    return q, scales.to(weight.dtype)


def quantize_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 in 32-wide groups (w = q * scale + minimum), packed for the CPU kernel.

    The kernel computes (q - 8) * scale + zero, so zero = minimum + 8 * scale.
    """
    rows, columns = weight.shape
    groups = weight.float().view(rows, columns // INT4_GROUP, INT4_GROUP)
    minimum = groups.amin(dim=-1, keepdim=True)
    scale = ((groups.amax(dim=-1, keepdim=True) - minimum) / INT4_LEVELS).clamp(min=1e-12)
    q = torch.round((groups - minimum) / scale).clamp(0, INT4_LEVELS).to(torch.int32).view(rows, columns)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    scales_and_zeros = torch.cat([scale, minimum + 8 * scale], dim=-1).transpose(0, 1).contiguous()
    return packed, scales_and_zeros.to(weight.dtype)


# Float32 dense weights where a bf16 matmul takes this many times as long as a float32 one,
SLOW_BF16_RATIO = 2.0
# and where the copy stays below this: for a larger model memory matters more than its prompts' speed.
DENSE_COPY_MAX_BYTES = 2 << 30
MEASURE_TRIES = 6


def dense_dtype(model_dtype: torch.dtype, weights: int) -> torch.dtype:
    """The dtype prompt chunks' matmuls over `weights` parameters run in: the model's, or float32 where bf16 is slow.

    The float32 copy costs memory (the embedded model: +405 MiB), bought for prompts
    3-5x faster (a 724-token prompt: 8.3 → 1.5 s on the AVX2 machine above; bench/bench_prefill.py).
    """
    if model_dtype != torch.bfloat16 or weights * 4 > DENSE_COPY_MAX_BYTES:
        return model_dtype
    return torch.float32 if bf16_matmul_slowdown() >= SLOW_BF16_RATIO else model_dtype


@functools.cache
def bf16_matmul_slowdown() -> float:
    """How many times as long a bf16 matmul of prompt-like shape takes as a float32 one on this CPU.

    Measured once a process (about 0.1 s), as CPU flags do not tell what torch's kernels make
    of them: the best of several interleaved tries, so a busy moment of the machine (the
    app starting beside browsers) does not decide it.
    """
    x, w = torch.randn(128, 1024), torch.randn(1024, 1024)
    operands = {torch.float32: (x, w), torch.bfloat16: (x.bfloat16(), w.bfloat16())}
    best = dict.fromkeys(operands, float("inf"))
    for _ in range(MEASURE_TRIES):
        for dtype, (a, b) in operands.items():
            started = time.perf_counter()
            F.linear(a, b)  # the first try also picks and prepares kernels; the best try counts
            best[dtype] = min(best[dtype], time.perf_counter() - started)
    return best[torch.bfloat16] / best[torch.float32]
