"""Choosing the next tokens of a decode step, all rows at once and one row at a time, on the embedded model's logits.

    .venv/bin/python bench/bench_sampling.py [--runs 200]

After each forward the decode thread picks a token for every sequence of the step
(sampling.py). This takes real next-token logits of the embedded model for 8 prompts,
then prints the median time to pick for 1 and 8 of them, with each operation over all
rows (`pick_tokens` on the step) against one row at a time, for greedy decoding, the
app's sampling defaults, and top_p 1; and how many tokens the nuclei held.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_client import LocalClient, Message, load_client  # noqa: E402
from glm_client.config import GenerationParams  # noqa: E402
from glm_client.engines.decoding import Row  # noqa: E402
from glm_client.engines.sampling import TokenPicker, pick_tokens, top_p_nuclei  # noqa: E402
from glm_client.engines.transformers import TransformersEngine  # noqa: E402

PROMPTS = [
    "Write a python function that reverses a string.",
    "What is the capital of France?",
    "Tell me a short story about a cat.",
    "Plot [1, 2, 3] with matplotlib.",
    "Explain what a hash table is.",
    "Translate 'good morning' into German.",
    "List three prime numbers.",
    "Why is the sky blue?",
]
SETTINGS = {
    "greedy": GenerationParams(temperature=0.0),
    "defaults (T 0.8, top_p 0.8, penalty 1.1)": GenerationParams(),
    "top_p 1": GenerationParams(top_p=1.0),
}


def next_token_logits(client: LocalClient) -> torch.Tensor:
    """Each prompt's next-token logits, in float32, as the decode thread gets them after its forward."""
    engine = client.engine
    assert isinstance(engine, TransformersEngine) and engine.fast is not None, "needs the packed CPU path"
    rows = []
    for prompt in PROMPTS:
        ids = client.dialect.encode([Message.user(prompt)])
        cache = engine.fast.new_cache(len(ids) + 1)
        rows.append(engine.fast.forward([Row(cache, ids)])[0])
    return torch.stack(rows).to(torch.float32)


def median_ms(pick: Callable[[], object], runs: int) -> float:
    pick()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        pick()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    client = load_client()
    assert isinstance(client, LocalClient)
    logits = next_token_logits(client)
    prompt_ids = [client.dialect.encode([Message.user(prompt)]) for prompt in PROMPTS]
    print(f"# Picking the next tokens of a decode step, embedded model's logits, {torch.get_num_threads()} threads\n")
    print("| settings | rows | one row at a time | all rows at once | ratio |")
    print("|---|---|---|---|---|")
    for name, params in SETTINGS.items():
        unbounded = dataclasses.replace(params, max_new_tokens=10**9)
        pickers = [TokenPicker(ids, unbounded, set()) for ids in prompt_ids]
        for rows in (1, 8):
            chosen = pickers[:rows]

            def at_once(chosen: list[TokenPicker] = chosen, rows: int = rows) -> object:
                return pick_tokens(chosen, logits[:rows].clone())

            def one_by_one(chosen: list[TokenPicker] = chosen, rows: int = rows) -> object:
                return [pick_tokens([picker], logits[row : row + 1].clone()) for row, picker in enumerate(chosen)]

            alone, batched = median_ms(one_by_one, args.runs), median_ms(at_once, args.runs)
            print(f"| {name} | {rows} | {alone:.2f} ms | {batched:.2f} ms | **{alone / batched:.2f}x** |")
    scaled = logits / GenerationParams().temperature
    _, _, keep = top_p_nuclei(scaled, [GenerationParams().top_p] * len(PROMPTS))
    print(f"\nTokens in each prompt's nucleus at the defaults: {keep}")


if __name__ == "__main__":
    main()
