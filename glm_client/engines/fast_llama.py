"""A lean forward pass for Llama-family decoders on CPU, with its own KV caches.

Why not the model's own forward: measured on the 2-core CI machine with the
embedded SmolLM2-135M (bench/bench_engine.py), one decode step of the transformers
forward spends most of its time outside the weights' arithmetic: bf16 GEMV streams
only ~6 GB/s, every module adds Python overhead, and sdpa's CPU kernel for a single
query grows to 2 ms per layer at a 2k context (the reply slows down as the chat grows).
This forward takes the loaded model's weights, packs the linear layers (int4/int8,
glm_client/engines/packed.py), fuses q/k/v and gate/up into one matmul each, runs
the attention of a step's decode rows in one call of a small C kernel (native_attention.py;
where it cannot be built, as two small bmm's per row) and the int8 output head on another,
runs the rest of each layer of a step whose rows all decode as two TorchScript functions
(decode_layers.py), and keeps one KV cache per sequence, so that:

- a prompt can reuse the cache of an earlier prompt with the same prefix (a chat's
  next turn prefills only the new message), and
- the decode steps of several sequences run as one forward (`forward` takes rows of
  different sequences and lengths): the weights are read once for all of them.

A prompt chunk of DENSE_MIN_TOKENS or more runs its linears on the model's own
bf16 weights (a matmul over many rows: 2-3x faster than the packed kernels, which are
made for few rows), or on a float32 copy of them where this CPU has no fast bf16
matmul (packed.dense_dtype), and its attention as one masked matmul; decode steps run on the
packed weights, one query at a time. A decode row's result does not depend on the
other rows of its step (batching changes no output, bit for bit); a token's logits
differ slightly between being prefilled and being decoded (prompt cache), within
what tests/test_engine_fast.py allows.

With bf16 weights (and bf16 dense matmuls) it computes what the transformers forward computes, op for op,
except the attention (eager math instead of sdpa's kernel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from glm_client.engines import decode_layers, native_attention
from glm_client.engines.decode_layers import DecodeLayers, rms_norm, rotary_split, silu_mul
from glm_client.engines.decoding import Row
from glm_client.engines.native_attention import DecodeStep
from glm_client.engines.packed import PackedLinear, dense_dtype

# Architectures whose decoder layers this forward reproduces exactly.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
# Keys/values for the torch path's attention: its bf16 bmm's of these small shapes run 2x slower
# than float32 here. The decode attention kernel reads bf16 caches (native_attention.py).
KV_DTYPE = torch.float32
# The KV cache grows in steps of this many tokens (a copy each time), not per token.
KV_GROWTH_TOKENS = 256
# A row of this many tokens or more (a prompt chunk) runs on dense bf16 weights: from
# 8 rows on a dense matmul beat the int4 kernel here (26 vs 20 ms a forward; 639 vs 267 at 500).
DENSE_MIN_TOKENS = 8


class KVCache:
    """Keys and values of one sequence, for every layer: [layers, kv_heads, capacity, head_dim]."""

    copyable = True

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, limit: int) -> None:
        self.shape = (layers, kv_heads, 0, head_dim)
        self.dtype = dtype
        self.limit = limit
        self.keys = torch.empty(self.shape, dtype=dtype)
        self.values = torch.empty(self.shape, dtype=dtype)
        self.length = 0  # tokens held; positions beyond are free to overwrite

    def reserve(self, total: int) -> None:
        """Make room for `total` tokens."""
        if total > self.limit:
            raise ValueError(f"{total} tokens exceed the context of {self.limit}")
        capacity = self.keys.shape[2]
        if total <= capacity:
            return
        capacity = min(self.limit, -(-total // KV_GROWTH_TOKENS) * KV_GROWTH_TOKENS)
        layers, heads, _, dim = self.shape
        for name in ("keys", "values"):
            grown = torch.empty((layers, heads, capacity, dim), dtype=self.dtype)
            grown[:, :, : self.length] = getattr(self, name)[:, :, : self.length]
            setattr(self, name, grown)

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)

    def copy_prefix(self, length: int) -> KVCache:
        layers, heads, _, dim = self.shape
        copy = KVCache(layers, heads, dim, self.dtype, self.limit)
        copy.reserve(length)
        copy.keys[:, :, :length] = self.keys[:, :, :length]
        copy.values[:, :, :length] = self.values[:, :, :length]
        copy.length = length
        return copy

    def release(self) -> None:
        self.keys = self.values = torch.empty(self.shape, dtype=self.dtype)
        self.length = 0

    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


@dataclass
class _Layer:
    attention_norm: torch.Tensor
    qkv: PackedLinear
    output: PackedLinear
    mlp_norm: torch.Tensor
    gate_up: PackedLinear
    down: PackedLinear


def unsupported_reason(model: Any) -> str | None:
    """Why `FastLlama` can't run this model, or None when it can."""
    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {config.model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default"}
    if rope.get("rope_type", "default") != "default":
        return f"rope type {rope.get('rope_type')!r} is not supported"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention is not supported"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not supported"
    if getattr(config, "mlp_bias", False):
        return "MLP biases are not supported"
    if next(model.parameters()).device.type != "cpu":
        return "the packed kernels run on CPU only"
    return None


class FastLlama:
    """The packed weights of a Llama-family model and a forward over rows of several sequences."""

    def __init__(
        self,
        model: Any,
        weight_bits: int = 4,
        head_bits: int = 8,
        dense: torch.dtype | None = None,
        native: bool = True,
    ) -> None:
        """`dense`: the dtype of prompt chunks' matmuls; None picks the fastest on this CPU (packed.dense_dtype).

        `native`: decode steps run on the native kernels where they build here (native_attention.py): the
        int4 layers' matmul, the int8 head's, and with a bf16 model the attention; False keeps the torch
        path (the benches compare the two).
        """
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(reason)
        config = model.config
        self.dtype = next(model.parameters()).dtype
        self.dense_dtype = dense or dense_dtype(self.dtype, sum(p.numel() for p in model.model.layers.parameters()))
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.inv_freq = model.model.rotary_emb.inv_freq.detach().float().clone()
        self.vocab_size = config.vocab_size
        # int4 layers on the native kernel where it builds (packed.py), as the head and the attention
        native_int4 = native and native_attention.unavailable_reason() is None
        # the small ops between the matmuls fused (native_ops.cpp), in every step, so a decode row
        # computes alike in a step of decode rows only (scripted) and beside a prompt (op by op)
        self.fused_ops = native_int4
        self.layers = [
            self._pack_layer(layer, weight_bits, self.dense_dtype, native_int4) for layer in model.model.layers
        ]
        self.final_norm = model.model.norm.weight.detach()
        self.head = PackedLinear(model.lm_head.weight, None, head_bits)
        self.embedding = model.model.embed_tokens.weight.detach()
        self.weight_bits = weight_bits
        self.head_bits = self.head.bits
        # The int8 head for every row count where it builds, so a row's logits never depend on the step's other rows.
        head_kernel = native and self.head.bits == 8 and config.hidden_size % 8 == 0
        self.int8_head = native_attention.load_int8_matmul() if head_kernel else None
        self.head_scales = self.head.scales.float() if self.head.scales is not None else None
        kernel = native_attention.load() if native and self.dtype == torch.bfloat16 and self.head_dim % 8 == 0 else None
        self.decode_attention = kernel
        # a step whose rows all decode runs each layer in two scripted calls beside the kernel
        self.scripted = decode_layers.load() if kernel is not None else None
        # bf16 holds the model's bf16 keys/values exactly; float32 where the torch path reads them
        self.kv_dtype = torch.bfloat16 if kernel is not None else KV_DTYPE

    @staticmethod
    def _pack_layer(layer: Any, bits: int, dense: torch.dtype, native: bool) -> _Layer:
        attention, mlp = layer.self_attn, layer.mlp
        qkv = (attention.q_proj, attention.k_proj, attention.v_proj)
        return _Layer(
            attention_norm=layer.input_layernorm.weight.detach(),
            qkv=PackedLinear(_fuse(qkv), _fuse_bias(qkv), bits, dense, native),
            output=PackedLinear(attention.o_proj.weight, attention.o_proj.bias, bits, dense, native),
            mlp_norm=layer.post_attention_layernorm.weight.detach(),
            gate_up=PackedLinear(_fuse((mlp.gate_proj, mlp.up_proj)), None, bits, dense, native),
            down=PackedLinear(mlp.down_proj.weight, None, bits, dense, native),
        )

    def new_cache(self, limit: int) -> KVCache:
        return KVCache(len(self.layers), self.kv_heads, self.head_dim, self.kv_dtype, limit)

    def packed_nbytes(self) -> int:
        """Memory the packed weights add to the model's own."""
        linears = [
            self.head,
            *(p for layer in self.layers for p in (layer.qkv, layer.output, layer.gate_up, layer.down)),
        ]
        return sum(linear.packed_nbytes() for linear in linears)

    @torch.inference_mode()
    def forward(self, rows: list[Row[KVCache]]) -> torch.Tensor:
        """Append each row's ids to its cache; return the logits after each row's last id, [rows, vocab]."""
        for row in rows:
            row.cache.reserve(row.cache.length + len(row.ids))
        ids = torch.tensor([token for row in rows for token in row.ids], dtype=torch.long)
        positions = torch.tensor(
            [position for row in rows for position in range(row.cache.length, row.cache.length + len(row.ids))]
        )
        x = F.embedding(ids, self.embedding)
        # Rotary tables computed as transformers does (float32, then the model's dtype).
        frequencies = positions[:, None].float() * self.inv_freq[None]
        angles = torch.cat((frequencies, frequencies), dim=-1)
        cos, sin = angles.cos().to(self.dtype)[:, None], angles.sin().to(self.dtype)[:, None]
        decoding = self._decode_step(rows)
        if decoding is not None and decoding.tokens is None and self.scripted is not None:
            x = self._decode_layers(x, cos, sin, decoding, self.scripted)
        else:
            x = self._layers(x, cos, sin, rows, decoding)
        for row in rows:
            row.cache.length += len(row.ids)
        ends = torch.tensor(_cumulative([len(row.ids) for row in rows])) - 1
        return self._head(self._norm(x[ends], self.final_norm))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of these hidden states: on the int8 kernel (float32) where it built, which reads
        the head's weights once for all rows where torch's reads them once a row (8 rows: 7.1 -> 3.6 ms)."""
        if self.int8_head is None or self.head_scales is None:
            return self.head(x)
        return self.int8_head(x, self.head.weight, self.head_scales)

    def _layers(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        rows: list[Row[KVCache]],
        decoding: _Decoding | None,
    ) -> torch.Tensor:
        """Every layer, op by op: prompt chunks, mixed steps, and steps without the kernel or TorchScript."""
        split = _Split.of(rows)
        group = self.heads // self.kv_heads
        # per row, which of its own tokens each query may not see (the same in every layer)
        later = [
            torch.ones(n, n, dtype=torch.bool).triu(1).repeat_interleave(group, dim=0) if n > 1 else None
            for n in (len(row.ids) for row in rows)
        ]
        for index, layer in enumerate(self.layers):
            h = self._norm(x, layer.attention_norm)
            queries, keys, values = rotary_split(
                split.apply(layer.qkv, h), cos, sin, self.heads, self.kv_heads, self.scale, self.fused_ops
            )
            attended = self._attention(index, rows, later, decoding, queries, keys, values)
            x = x + split.apply(layer.output, attended)
            h = self._norm(x, layer.mlp_norm)
            x = x + split.apply(layer.down, silu_mul(split.apply(layer.gate_up, h), self.fused_ops))
        return x

    def _decode_layers(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, decoding: _Decoding, scripted: DecodeLayers
    ) -> torch.Tensor:
        """Every layer of a step whose rows all decode: two scripted calls and the kernel's (decode_layers.py)."""
        for index, layer in enumerate(self.layers):
            queries, keys, values, attended = scripted.attention_inputs(
                x,
                layer.attention_norm,
                layer.qkv.parts(),
                cos,
                sin,
                self.heads,
                self.kv_heads,
                self.eps,
                self.scale,
                self.fused_ops,
            )
            decoding.kernel.into(decoding.step, index, queries, keys, values, attended)
            x = scripted.layer_output(
                x,
                attended,
                layer.output.parts(),
                layer.mlp_norm,
                layer.gate_up.parts(),
                layer.down.parts(),
                self.eps,
                self.fused_ops,
            )
        return x

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, weight, self.eps, self.fused_ops)

    def _decode_step(self, rows: list[Row[KVCache]]) -> _Decoding | None:
        """The rows the kernel attends for: every decode step (one token), beside prompts or not.

        All of them, always: a decode row's result must not depend on the other rows of its step.
        """
        kernel = self.decode_attention
        decode = [index for index, row in enumerate(rows) if len(row.ids) == 1]
        if kernel is None or not decode:
            return None
        starts = [0, *_cumulative([len(row.ids) for row in rows])]
        step = kernel.step([(rows[i].cache.keys, rows[i].cache.values, rows[i].cache.length) for i in decode])
        every = len(decode) == len(rows)
        return _Decoding(
            kernel, step, {row: j for j, row in enumerate(decode)}, None if every else [starts[i] for i in decode]
        )

    def _attention(
        self,
        layer: int,
        rows: list[Row[KVCache]],
        later: list[torch.Tensor | None],
        decoding: _Decoding | None,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """Write each row's keys/values into its cache and attend over the cache; [tokens, heads * dim].

        `queries` are float32 and scaled, [tokens, kv_heads, group, dim] (rotary_split).

        Decode steps go to the kernel in one call (`decoding`). Other rows, and all of them
        without the kernel, as two bmm's per row over [kv_heads, tokens * group, …]: each kv head
        with the queries it serves, the row's own later tokens masked. A one-token row computes
        the same whatever the other rows of its step. (sdpa's CPU kernel for one query costs 10x
        more at long contexts.)
        """
        group = self.heads // self.kv_heads
        decoded = None
        if decoding is not None:
            tokens = decoding.tokens
            if tokens is None:  # every row is a decode step: one call, nothing to gather
                attended = decoding.kernel(decoding.step, layer, queries, keys, values)
                return attended.view(len(rows), -1).to(self.dtype)
            decoded = decoding.kernel(decoding.step, layer, queries[tokens], keys[tokens], values[tokens])
        outputs = []
        start = 0
        for index, (row, row_later) in enumerate(zip(rows, later, strict=True)):
            count, past = len(row.ids), row.cache.length
            if decoded is not None and decoding is not None and index in decoding.rows:
                outputs.append(decoded[decoding.rows[index]].view(1, -1))
                start += count
                continue
            visible = past + count
            cached_keys, cached_values = row.cache.keys[layer], row.cache.values[layer]
            cached_keys[:, past:visible] = keys[start : start + count].transpose(0, 1)
            cached_values[:, past:visible] = values[start : start + count].transpose(0, 1)
            # [count, kv_heads, group, dim] → [kv_heads, count * group, dim]: each kv head with its queries
            if count == 1:  # a decode step: a view, no copy
                grouped = queries[start]
            else:
                grouped = queries[start : start + count].transpose(0, 1).reshape(self.kv_heads, count * group, -1)
            # float32 for the bmm's (a no-op for a float32 cache; a bf16 one holds the same values)
            seen_keys, seen_values = (cached[:, :visible].to(torch.float32) for cached in (cached_keys, cached_values))
            scores = torch.bmm(grouped, seen_keys.transpose(1, 2))
            if row_later is not None:  # token i sees the cache and the row's tokens up to itself
                scores[:, :, past:].masked_fill_(row_later, float("-inf"))
            attended = torch.bmm(torch.softmax(scores, dim=-1), seen_values)
            # [kv_heads, count * group, dim] → [count, heads * dim], heads in kv-major order as in the model
            if count > 1:
                attended = attended.view(self.kv_heads, count, group, self.head_dim).transpose(0, 1)
            outputs.append(attended.reshape(count, -1))
            start += count
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)).to(self.dtype)


@dataclass
class _Decoding:
    """A forward's decode rows for the kernel: their caches, and where their tokens are."""

    kernel: native_attention.DecodeAttention
    step: DecodeStep
    rows: dict[int, int]  # row index → its place in the kernel's output
    tokens: list[int] | None  # their token indices; None when every row is a decode step (token i = row i)


class _Split:
    """Which tokens of a forward run on dense weights (rows of DENSE_MIN_TOKENS or more) and which packed."""

    def __init__(self, dense: list[slice], packed: torch.Tensor | None, total: int) -> None:
        self.dense = dense
        self.packed = packed  # indices of the packed tokens, None when all are
        self.total = total

    @classmethod
    def of(cls, rows: list[Row[KVCache]]) -> _Split:
        dense: list[slice] = []
        packed: list[int] = []  # token indices
        start = 0
        for row in rows:
            count = len(row.ids)
            if count >= DENSE_MIN_TOKENS:
                dense.append(slice(start, start + count))
            else:
                packed.extend(range(start, start + count))
            start += count
        return cls(dense, None if not dense else torch.tensor(packed, dtype=torch.long), start)

    def apply(self, linear: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        if not self.dense:
            return linear(x)
        if len(self.dense) == 1 and self.dense[0] == slice(0, self.total):
            return linear.dense(x)
        y = torch.empty(x.shape[0], linear.out_features, dtype=x.dtype)
        for part in self.dense:  # one matmul per row, so a row's result does not depend on the others
            y[part] = linear.dense(x[part])
        if self.packed is not None and self.packed.numel():
            y[self.packed] = linear(x[self.packed])
        return y


def _fuse(linears: tuple[Any, ...]) -> torch.Tensor:
    """One weight for several linears reading the same input; the linears then view into it (no copy kept)."""
    fused = torch.cat([linear.weight.detach() for linear in linears])
    start = 0
    for linear in linears:
        rows = linear.weight.shape[0]
        linear.weight = torch.nn.Parameter(fused[start : start + rows], requires_grad=False)
        start += rows
    return fused


def _fuse_bias(linears: tuple[Any, ...]) -> torch.Tensor | None:
    if linears[0].bias is None:
        return None
    return torch.cat([linear.bias.detach() for linear in linears])


def _cumulative(counts: list[int]) -> list[int]:
    total, sums = 0, []
    for count in counts:
        total += count
        sums.append(total)
    return sums
