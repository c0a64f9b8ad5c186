"""Decode steps of the packed CPU path with its C kernels and with torch ops, on the embedded model.

    .venv/bin/python bench/bench_attention.py [--runs 15]

A decode step of several sequences attends for each over its own KV cache (fast_llama.py).
The torch path runs two bmm's and a softmax per sequence and layer over float32 caches; the
kernel (native_attention.py) runs them all in one call a layer over bf16 caches, and the rest
of each layer runs as two TorchScript functions (decode_layers.py) or op by op; the int8 output
head runs on torch's kernel or on int8_matmul.c, the int4 layers on torch's kernel or on
int4_matmul.c, and the small ops between a layer's matmuls fused (native_ops.cpp; the last
column: every kernel, what the app runs). This prints, for 1 and 8 sequences at several
context lengths, the median time of one step (--runs steps, the paths taking turns) on each path,
the ratios, and a cache's bytes a token; then the int4 matmuls of all layers alone, on torch's
kernel and on int4_matmul.c, for 1 to 8 rows; and how far the torch path's and the kernels'
logits are apart on the same steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_client import LocalClient, load_client  # noqa: E402
from glm_client.engines import native_attention  # noqa: E402
from glm_client.engines.decoding import Row  # noqa: E402
from glm_client.engines.fast_llama import KV_GROWTH_TOKENS, FastLlama, KVCache  # noqa: E402
from glm_client.engines.transformers import TransformersEngine  # noqa: E402

CONTEXTS = (200, 1000, 2000)
SEQUENCES = (1, 8)
STEP_TOKEN = 5


def filled_caches(fast: FastLlama, sequences: int, context: int) -> list[KVCache]:
    """Caches holding `context` tokens each (the same random ids for both paths)."""
    generator = torch.Generator().manual_seed(context)
    caches = []
    for _ in range(sequences):
        cache = fast.new_cache(context + 64)
        ids = torch.randint(100, 40_000, (context,), generator=generator).tolist()
        fast.forward([Row(cache, ids)])
        caches.append(cache)
    return caches


def step(fast: FastLlama, caches: list[KVCache]) -> tuple[float, torch.Tensor]:
    """One decode step of every cache; the caches are rewound after, so each step sees the same context."""
    started = time.perf_counter()
    logits = fast.forward([Row(cache, [STEP_TOKEN]) for cache in caches])
    elapsed = time.perf_counter() - started
    for cache in caches:
        cache.truncate(cache.length - 1)
    return elapsed, logits


def int4_matmuls(paths: dict[str, FastLlama], runs: int) -> None:
    """The time of every layer's int4 matmuls for one step of 1, 4 and 8 rows, on torch's kernel and on ours."""
    print("\n| rows | all layers' int4 matmuls, torch's kernel | int4_matmul.c | torch / int4_matmul.c |")
    print("|---|---|---|---|")
    kernels = {"torch": paths["torch ops"].layers, "native": paths["+ int4 kernel"].layers}
    for rows in (1, 4, 8):
        times: dict[str, list[float]] = {name: [] for name in kernels}
        for run in range(runs + 1):
            for name, layers in kernels.items():
                linears = [
                    linear for layer in layers for linear in (layer.qkv, layer.output, layer.gate_up, layer.down)
                ]
                inputs = [torch.randn(rows, linear.in_features, dtype=torch.bfloat16) for linear in linears]
                started = time.perf_counter()
                for linear, x in zip(linears, inputs, strict=True):
                    linear(x)
                if run:
                    times[name].append(time.perf_counter() - started)
        torch_ms, native_ms = (statistics.median(times[name]) * 1000 for name in kernels)
        print(f"| {rows} | {torch_ms:.1f} ms | {native_ms:.1f} ms | **{torch_ms / native_ms:.2f}x** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    base = load_client()
    assert isinstance(base, LocalClient) and isinstance(base.engine, TransformersEngine), (
        "needs the transformers engine"
    )
    torch_ops = FastLlama(base.engine.model, native=False)
    op_by_op, scripted, head = (FastLlama(base.engine.model) for _ in range(3))
    for fast in (op_by_op, scripted, head):
        fast.layers = torch_ops.layers  # torch's int4 kernel, as before int4_matmul.c
    op_by_op.scripted = op_by_op.int8_head = scripted.int8_head = None
    paths = {"torch ops": torch_ops, "kernel": op_by_op, "kernel + scripted": scripted, "+ int8 head": head}
    paths["+ int4 kernel"] = FastLlama(base.engine.model)
    for fast in paths.values():
        fast.fused_ops = False  # torch's ops between the matmuls, as before native_ops.cpp fused them
    paths["+ fused ops"] = FastLlama(base.engine.model)
    if paths["+ int8 head"].int8_head is None:
        sys.exit(f"The kernels are not available here: {native_attention.unavailable_reason()}")
    if paths["kernel + scripted"].scripted is None:
        sys.exit("TorchScript could not compile decode_layers.py here")
    print(f"# Decode steps on the embedded model, int4 weights, CPU, {torch.get_num_threads()} threads\n")
    print(
        "| sequences × context | torch ops (float32 cache) | kernel (bf16 cache) | kernel + scripted layers "
        "| + int8 head kernel | + int4 kernel | + fused ops | torch / kernel | kernel / + scripted "
        "| + scripted / + int8 head | + int8 head / + int4 kernel | + int4 kernel / + fused ops | torch / all kernels |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    drift = []
    for sequences in SEQUENCES:
        for context in CONTEXTS:
            caches = {name: filled_caches(fast, sequences, context) for name, fast in paths.items()}
            times: dict[str, list[float]] = {name: [] for name in paths}
            for run in range(args.runs + 1):  # the paths take turns, so a busy moment of the machine hits all
                for name, fast in paths.items():
                    elapsed = step(fast, caches[name])[0]
                    if run:  # the first is a warm-up
                        times[name].append(elapsed)
            medians = {name: statistics.median(elapsed) * 1000 for name, elapsed in times.items()}
            last = {name: step(fast, caches[name])[1].float() for name, fast in paths.items()}
            drift.append((last["+ fused ops"] - last["torch ops"]).abs().max().item())
            same = (last["+ fused ops"].argmax(-1) == last["torch ops"].argmax(-1)).all().item()
            ratio = medians["torch ops"] / medians["kernel"]
            by_script = medians["kernel"] / medians["kernel + scripted"]
            by_head = medians["kernel + scripted"] / medians["+ int8 head"]
            by_int4 = medians["+ int8 head"] / medians["+ int4 kernel"]
            by_fused = medians["+ int4 kernel"] / medians["+ fused ops"]
            overall = medians["torch ops"] / medians["+ fused ops"]
            print(
                f"| {sequences} × {context} | {medians['torch ops']:.1f} ms | {medians['kernel']:.1f} ms "
                f"| {medians['kernel + scripted']:.1f} ms | {medians['+ int8 head']:.1f} ms "
                f"| {medians['+ int4 kernel']:.1f} ms | {medians['+ fused ops']:.1f} ms | **{ratio:.2f}x** "
                f"| **{by_script:.2f}x** | **{by_head:.2f}x** | **{by_int4:.2f}x** | **{by_fused:.2f}x** "
                f"| **{overall:.2f}x**{'' if same else ' (a top token differs)'} |"
            )
    kilobytes = {}
    for name, fast in paths.items():
        cache = fast.new_cache(KV_GROWTH_TOKENS)
        cache.reserve(KV_GROWTH_TOKENS)
        kilobytes[name] = cache.nbytes() / KV_GROWTH_TOKENS / 1000
    print(
        f"\nKV cache a token: torch ops {kilobytes['torch ops']:.0f} KB (float32), kernel {kilobytes['kernel']:.0f} KB (bf16)"
    )
    int4_matmuls(paths, args.runs)
    print(f"\nLargest logit difference between the torch path and all kernels on these steps: {max(drift):.2f}")


if __name__ == "__main__":
    main()
