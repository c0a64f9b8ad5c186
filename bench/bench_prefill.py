"""Prompt (prefill) speed of the packed CPU path with bf16 and float32 dense weights, on the embedded model.

    .venv/bin/python bench/bench_prefill.py [--runs 3]

A prompt's chunks run their matmuls on dense weights (fast_llama.py). On a CPU without
bf16 instructions those run far slower in bf16 than in float32, so the engine keeps a
float32 copy there (packed.dense_dtype). This prints, for cold prompts of several
lengths, the time to the first token with each dtype (median of --runs, the prompt
cache emptied each time), their ratio, what the copy costs in memory, and which dtype
this machine picks.
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

from glm_client import LocalClient, Message, load_client  # noqa: E402
from glm_client.engines.fast_llama import FastLlama  # noqa: E402
from glm_client.engines.packed import bf16_matmul_slowdown  # noqa: E402
from glm_client.engines.prompt_cache import PromptCache  # noqa: E402
from glm_client.engines.transformers import TransformersEngine  # noqa: E402

WORDS = (20, 200, 800)  # prompts of about 100, 700 and 3000 tokens
DTYPES = {"bf16": torch.bfloat16, "float32": torch.float32}


def prompt(words: int, run: int) -> list[Message]:
    return [Message.user(f"Run {run}. " + " ".join(f"w{index}" for index in range(words)))]


def first_token_s(client: LocalClient, messages: list[Message]) -> float:
    started = time.perf_counter()
    for _event in client.stream(messages, max_new_tokens=1, temperature=0.0):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = load_client()
    assert isinstance(base, LocalClient) and isinstance(base.engine, TransformersEngine), (
        "needs the transformers engine"
    )
    model, tokenizer, info = base.engine.model, base.engine.tokenizer, base.engine.info
    clients, extra = {}, {}
    for name, dtype in DTYPES.items():
        fast = FastLlama(model, weight_bits=4, head_bits=8, dense=dtype)
        extra[name] = fast.packed_nbytes()
        engine = TransformersEngine(model, tokenizer, info, fast=fast, prompt_cache=PromptCache(0, 0))
        clients[name] = LocalClient(engine, base.dialect)
        first_token_s(clients[name], prompt(5, -1))  # warm-up
    print(f"# Prefill on {info.name}, packed int4, {torch.get_num_threads()} threads, median of {args.runs}\n")
    print("| prompt tokens | bf16 dense | float32 dense | bf16 / float32 |\n| --- | --- | --- | --- |")
    for words in WORDS:
        tokens = len(base.render_prompt(prompt(words, 0)).ids or [])
        times = {
            name: statistics.median(first_token_s(client, prompt(words, run)) for run in range(args.runs))
            for name, client in clients.items()
        }
        print(
            f"| {tokens} | {times['bf16']:.2f} s | {times['float32']:.2f} s | {times['bf16'] / times['float32']:.2f}x |"
        )
    copy_mib = (extra["float32"] - extra["bf16"]) / 2**20
    picked = base.engine.fast.dense_dtype if base.engine.fast else info.dtype  # what loading chose
    print(
        f"\nfloat32 dense weights cost +{copy_mib:.0f} MiB. A bf16 matmul takes {bf16_matmul_slowdown():.1f}x "
        f"as long as float32 on this CPU, so the engine picks {str(picked).removeprefix('torch.')}."
    )


if __name__ == "__main__":
    main()
