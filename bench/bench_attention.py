"""Decode steps of the packed CPU path with the C attention kernel and with torch ops, on the embedded model.

    .venv/bin/python bench/bench_attention.py [--runs 15]

A decode step of several sequences attends for each over its own KV cache (fast_llama.py).
The torch path runs two bmm's and a softmax per sequence and layer over float32 caches; the
kernel (native_attention.py) runs them all in one call a layer over bf16 caches. This prints,
for 1 and 8 sequences at several context lengths, the median time of one step (--runs steps)
with each, their ratio, and a cache's bytes a token; then how far the two paths' logits are
apart on the same steps.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    base = load_client()
    assert isinstance(base, LocalClient) and isinstance(base.engine, TransformersEngine), (
        "needs the transformers engine"
    )
    paths = {"torch ops": FastLlama(base.engine.model, native=False), "kernel": FastLlama(base.engine.model)}
    if paths["kernel"].decode_attention is None:
        sys.exit(f"The kernel is not available here: {native_attention.unavailable_reason()}")
    print(f"# Decode steps on the embedded model, int4 weights, CPU, {torch.get_num_threads()} threads\n")
    print("| sequences × context | torch ops (float32 cache) | kernel (bf16 cache) | torch / kernel |")
    print("|---|---|---|---|")
    drift = []
    for sequences in SEQUENCES:
        for context in CONTEXTS:
            medians, last = {}, {}
            for name, fast in paths.items():
                caches = filled_caches(fast, sequences, context)
                step(fast, caches)  # warm-up
                times = [step(fast, caches)[0] for _ in range(args.runs)]
                medians[name] = statistics.median(times) * 1000
                last[name] = step(fast, caches)[1].float()
            drift.append((last["kernel"] - last["torch ops"]).abs().max().item())
            same = (last["kernel"].argmax(-1) == last["torch ops"].argmax(-1)).all().item()
            ratio = medians["torch ops"] / medians["kernel"]
            print(
                f"| {sequences} × {context} | {medians['torch ops']:.1f} ms | {medians['kernel']:.1f} ms "
                f"| **{ratio:.2f}x**{'' if same else ' (a top token differs)'} |"
            )
    kilobytes = {}
    for name, fast in paths.items():
        cache = fast.new_cache(KV_GROWTH_TOKENS)
        cache.reserve(KV_GROWTH_TOKENS)
        kilobytes[name] = cache.nbytes() / KV_GROWTH_TOKENS / 1000
    print(
        f"\nKV cache a token: torch ops {kilobytes['torch ops']:.0f} KB (float32), kernel {kilobytes['kernel']:.0f} KB (bf16)"
    )
    print(f"Largest logit difference between the paths on these steps: {max(drift):.2f} (logits span about 30)")


if __name__ == "__main__":
    main()
