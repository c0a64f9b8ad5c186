"""A decode step's layers as TorchScript functions: a layer's ops in two calls, run without the GIL.

Why: fast_llama's forward calls ~30 torch ops a layer from Python. Each call costs Python
overhead, and lets go of the GIL and takes it back, so the decode thread waits whenever
another thread holds the GIL (the sessions' scripts, the server's event loop). A scripted
function runs all its ops in one call, so a layer of a step whose rows all decode takes the
GIL back three times (its two functions and the attention kernel) instead of ~30. Measured
with 8 sequences at ~1000 tokens: 59.7 → 55.7 ms a step on an idle machine; with torch on one
thread beside a Python thread busy 30% of the time, 200 → 142 ms.

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


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm as transformers computes it: in float32, rounded to the model's dtype, then scaled."""
    return weight * torch.rms_norm(x.float(), [x.shape[-1]], eps=eps).to(x.dtype)


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


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
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The attention kernel's queries (float32, scaled, [rows, kv_heads, group, dim]), keys, values and output buffer."""
    dim = cos.shape[-1]
    projected = packed_linear(rms_norm(x, norm_weight, eps), qkv)
    query_keys = projected[:, : (heads + kv_heads) * dim].view(-1, heads + kv_heads, dim)
    query_keys = query_keys * cos + rotate_half(query_keys) * sin
    values = projected[:, (heads + kv_heads) * dim :].view(-1, kv_heads, dim)
    queries = (query_keys[:, :heads].to(torch.float32) * scale).view(-1, kv_heads, heads // kv_heads, dim).contiguous()
    return queries, query_keys[:, heads:].contiguous(), values.contiguous(), torch.empty_like(queries)


def layer_output(
    x: Tensor,
    attended: Tensor,
    output: LinearParts,
    mlp_norm: Tensor,
    gate_up: LinearParts,
    down: LinearParts,
    intermediate: int,
    eps: float,
) -> Tensor:
    """The layer's output from its input `x` and the kernel's float32 `attended`: projection, residuals and MLP."""
    x = x + packed_linear(attended.view(x.shape[0], -1).to(x.dtype), output)
    gated = packed_linear(rms_norm(x, mlp_norm, eps), gate_up)
    return x + packed_linear(F.silu(gated[:, :intermediate]) * gated[:, intermediate:], down)


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
