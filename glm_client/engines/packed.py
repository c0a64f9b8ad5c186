"""Weight-only quantized linear layers for CPU decoding: y = x @ W.T with W kept small.

Decoding one token reads every weight once, so on a CPU its speed is set by how
many bytes the weights take and how well the matmul kernel streams them. Measured
on the 2-core CI machine (one thread, all SmolLM2-135M shapes, bench/bench_engine.py
prints the end-to-end figures): bf16 `F.linear` 33 ms per token, int8
`_weight_int8pack_mm` 18 ms, int4 `_weight_int4pack_mm_for_cpu` 8 ms.

int4 uses asymmetric 32-wide groups, the layout of GGUF's Q4_1: weights that came
from a Q4_1 file (the embedded model) are reproduced up to bf16 rounding, so the
quantization costs them nothing.

Where the native kernels build (native_attention.py), int4 weights are laid out for
int4_matmul.c instead, which widens each weight once for all rows of a step: 8 rows of all
the embedded model's layers in 17.2 ms against torch's 22.4 (2 cores; bench/bench_attention.py).

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

# The native int4 matmul's schema; native_ops.cpp registers its kernel. Defined here, so that the
# scripted decode layers (decode_layers.py) compile whether or not the kernel could be built.
_OPERATORS = torch.library.Library("glm_workbench", "DEF")
_OPERATORS.define("int4_matmul(Tensor x, Tensor weight, Tensor scales) -> Tensor")


class PackedLinear:
    """One linear layer whose weight is kept in `bits` bits (16: as it is)."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        bits: int,
        dense_dtype: torch.dtype | None = None,
        native: bool = False,
    ) -> None:
        """`native`: int4 weights in the layout of the native kernel (int4_matmul.c), which must be loaded."""
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
        self.group = 0  # see LinearParts
        if bits == 8:
            self.weight, self.scales = quantize_int8(self.weight)
        elif bits == 4:
            self.weight, self.scales = (quantize_int4_native if native else quantize_int4)(self.weight)
            self.group = -INT4_GROUP if native else INT4_GROUP

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self.parts())

    def parts(self) -> LinearParts:
        """The layer as `packed_linear` takes it, also inside TorchScript (decode_layers.py)."""
        return self.weight, self.scales, self.bias, self.group

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """y = x @ W.T on the unpacked weight: faster than the packed kernels from about 8 rows on."""
        y = F.linear(x.to(self.dense_weight.dtype), self.dense_weight).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def packed_nbytes(self) -> int:
        """Bytes beyond the model's own weights."""
        packed = 0 if self.scales is None else self.weight.nbytes + self.scales.nbytes
        return packed + (self.dense_weight.nbytes if self.dense_copied else 0)


# weight, scales (None: the model's own weight), bias, and the weights a scale covers (0: a
# whole row, int8; else int4's groups: torch's kernel, or the native one where negative)
LinearParts = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, int]


def packed_linear(x: torch.Tensor, parts: LinearParts) -> torch.Tensor:
    """y = x @ W.T (+ bias) on a layer's packed weight; TorchScript compiles it as it is (no globals)."""
    weight, scales, bias, group = parts
    if scales is None:
        y = F.linear(x, weight)
    elif group == 0:
        y = torch.ops.aten._weight_int8pack_mm(x, weight, scales)
    elif group > 0:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, weight, group, scales)
    else:
        y = torch.ops.glm_workbench.int4_matmul(x, weight, scales)
    return y if bias is None else y + bias


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / INT8_LEVELS).clamp(min=1e-12)
    q = torch.round(w / scales[:, None]).clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8).contiguous()
    return q, scales.to(weight.dtype)


def quantize_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 in 32-wide groups (w = q * scale + minimum), packed for torch's CPU kernel.

    The kernel computes (q - 8) * scale + zero, so zero = minimum + 8 * scale.
    """
    q, scale, minimum = _int4_groups(weight)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).view(weight.shape), 1)
    scales_and_zeros = torch.stack([scale, minimum + 8 * scale], dim=-1).transpose(0, 1).contiguous()
    return packed, scales_and_zeros.to(weight.dtype)


def quantize_int4_native(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same int4 groups laid out for int4_matmul.c: a group's 32 weights in 16 bytes (byte j holds
    weights j and j + 16), and float32 [2, rows, groups] of the groups' scales, then minimums."""
    q, scale, minimum = _int4_groups(weight)
    packed = (q[..., : INT4_GROUP // 2] | (q[..., INT4_GROUP // 2 :] << 4)).view(weight.shape[0], -1).contiguous()
    return packed, torch.stack([scale, minimum]).contiguous()


def _int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (uint8 0..15, [rows, groups, 32]), scale and minimum (float32, [rows, groups]) of each 32-wide group."""
    rows, columns = weight.shape
    groups = weight.float().view(rows, columns // INT4_GROUP, INT4_GROUP)
    minimum = groups.amin(dim=-1)
    scale = ((groups.amax(dim=-1) - minimum) / INT4_LEVELS).clamp(min=1e-12)
    q = torch.round((groups - minimum[..., None]) / scale[..., None]).clamp(0, INT4_LEVELS).to(torch.uint8)
    return q, scale, minimum


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
