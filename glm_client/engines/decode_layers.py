"""A decode step's layers as TorchScript functions: a layer's ops in two calls, run without the GIL.

Why: fast_llama's forward calls ~30 torch ops a layer from Python. Each call costs Python
overhead, and lets go of the GIL and takes it back, so the decode thread waits whenever
another thread holds the GIL (the sessions' scripts, the server's event loop). A scripted
function runs all its ops in one call, so a layer of a step whose rows all decode takes the
GIL back three times (its two functions and the attention kernel) instead of ~30. Measured
with 8 sequences at ~1000 tokens: 59.7 → 55.7 ms a step on an idle machine; with torch on one
thread beside a Python thread busy 30% of the time, 200 → 142 ms.

Where the native kernels are built, the small ops between a layer's matmuls run fused, in the
scripted functions and op by op alike (`fused`; native_ops.cpp): the RMSNorms, the rotary
embedding with the split into queries, keys and values, and SiLU(gate) * up, three ops in place
of ~25 (a step of 1 sequence 16.7 → 13.8 ms, of 8 sequences 41.3 → 39.8; bench_attention.py).

They compute what fast_llama's eager path computes, op for op (tests/test_engine_fast.py
checks bit for bit). `torch.jit.script` is deprecated in favour of `torch.compile`, which
generates and builds C++ code as the app starts; torch is pinned (2.13), and where scripting
fails (or the source files are missing, which TorchScript reads) `load()` returns None and
the eager path runs.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from glm_client.engines.packed import LinearParts, packed_linear

log = logging.getLogger(__name__)


# The fused ops between a layer's matmuls (native_ops.cpp registers their kernels). Defined here, so
# that the functions below script whether or not the kernels could be built.
_OPERATORS = torch.library.Library("glm_workbench", "FRAGMENT")
_OPERATORS.define("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor")
_OPERATORS.define(
    "rotary_split(Tensor projected, Tensor cos, Tensor sin, int heads, int kv_heads, float scale) -> (Tensor, Tensor, Tensor)"
)
_OPERATORS.define("silu_mul(Tensor gated) -> Tensor")


def rms_norm(x: Tensor, weight: Tensor, eps: float, fused: bool) -> Tensor:
    """RMSNorm as transformers computes it: in float32, rounded to the model's dtype, then scaled."""
    if fused:
        return torch.ops.glm_workbench.rms_norm(x, weight, eps)
    return weight * torch.rms_norm(x.float(), [x.shape[-1]], eps=eps).to(x.dtype)


def rotary_split(
    projected: Tensor, cos: Tensor, sin: Tensor, heads: int, kv_heads: int, scale: float, fused: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The rotary embedding of the q/k/v projection's queries and keys: the queries in float32 times
    `scale` ([rows, kv_heads, group, dim], what the attention reads), the keys and values [rows, kv_heads, dim]."""
    if fused:
        return torch.ops.glm_workbench.rotary_split(projected, cos, sin, heads, kv_heads, scale)
    dim = cos.shape[-1]
    query_keys = projected[:, : (heads + kv_heads) * dim].view(-1, heads + kv_heads, dim)
    query_keys = query_keys * cos + rotate_half(query_keys) * sin
    values = projected[:, (heads + kv_heads) * dim :].view(-1, kv_heads, dim)
    queries = (query_keys[:, :heads].to(torch.float32) * scale).view(-1, kv_heads, heads // kv_heads, dim).contiguous()
    return queries, query_keys[:, heads:].contiguous(), values.contiguous()


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def silu_mul(gated: Tensor, fused: bool) -> Tensor:
    """SiLU(gate) * up of the gate/up projection ([rows, 2 * intermediate]: the gates, then the ups)."""
    if fused:
        return torch.ops.glm_workbench.silu_mul(gated)
    intermediate = gated.shape[-1] // 2
    return F.silu(gated[:, :intermediate]) * gated[:, intermediate:]


def attention_inputs(
    x: Tensor,
    norm_weight: Tensor,
    qkv: LinearParts,
    cos: Tensor,
    sin: Tensor,
    heads: int,
    kv_heads: int,
    eps: float,
    scale: float,
    fused: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The attention kernel's queries (float32, scaled, [rows, kv_heads, group, dim]), keys, values and output buffer."""
    projected = packed_linear(rms_norm(x, norm_weight, eps, fused), qkv)
    queries, keys, values = rotary_split(projected, cos, sin, heads, kv_heads, scale, fused)
    return queries, keys, values, torch.empty_like(queries)


def layer_output(
    x: Tensor,
    attended: Tensor,
    output: LinearParts,
    mlp_norm: Tensor,
    gate_up: LinearParts,
    down: LinearParts,
    eps: float,
    fused: bool,
) -> Tensor:
    """The layer's output from its input `x` and the kernel's float32 `attended`: projection, residuals and MLP."""
    x = x + packed_linear(attended.view(x.shape[0], -1).to(x.dtype), output)
    gated = packed_linear(rms_norm(x, mlp_norm, eps, fused), gate_up)
    return x + packed_linear(silu_mul(gated, fused), down)


class DecodeLayers:
    """The scripted functions of a decode step's layer."""

    def __init__(self) -> None:
        self.attention_inputs: Any = torch.jit.script(attention_inputs)
        self.layer_output: Any = torch.jit.script(layer_output)


@functools.cache
def load() -> DecodeLayers | None:
    """The scripted functions, once a process; None where this torch cannot script them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
            return DecodeLayers()
    except Exception as error:  # e.g. a torch without TorchScript
        log.info("Decode steps run their layers op by op: %s", error)
        return None
