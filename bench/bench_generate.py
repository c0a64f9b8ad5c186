"""Decode speed and time to first token: plain `model.generate` vs the workbench's `client.stream`.

    .venv/bin/python bench/bench_generate.py [--runs 5] [--tokens 128]

Both run greedy on the embedded model with the same prompt and the same number of
new tokens, in one process, alternating, so machine noise hits both alike. Also
shown for reference: generate driven through a TextIteratorStreamer thread, the
usual way of streaming transformers output.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glm_client import Done, LocalClient, Message, Settings, load_client

PROMPT = [Message.user("Write a long story about a dragon who learns to paint.")]


class FirstTokenTimer:
    """A generate() streamer that only notes when the first new token arrives."""

    def __init__(self) -> None:
        self.first: float | None = None
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen and self.first is None:
            self.first = time.perf_counter()
        self._prompt_seen = True

    def end(self) -> None:
        pass


def plain_generate(client: LocalClient, ids: list[int], tokens: int) -> tuple[float, float]:
    timer = FirstTokenTimer()
    start = time.perf_counter()
    with torch.inference_mode():
        client.engine.model.generate(
            torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=timer
        )
    end = time.perf_counter()
    assert timer.first is not None
    return timer.first - start, (tokens - 1) / (end - timer.first)


def streamer_thread(client: LocalClient, ids: list[int], tokens: int) -> tuple[float, float]:
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(client.engine.tokenizer, skip_prompt=True)
    kwargs = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False, "streamer": streamer}
    start = time.perf_counter()
    thread = threading.Thread(target=client.engine.model.generate, args=(torch.tensor([ids]),), kwargs=kwargs)
    thread.start()
    first = None
    for _text in streamer:
        first = first or time.perf_counter()
    thread.join()
    end = time.perf_counter()
    return first - start, (tokens - 1) / (end - first)


def client_stream(client: LocalClient, tokens: int) -> tuple[float, float]:
    done = None
    for event in client.stream(PROMPT, temperature=0.0, max_new_tokens=tokens, repetition_penalty=1.0, stop=()):
        if isinstance(event, Done):
            done = event
    assert done is not None and done.usage.completion_tokens == tokens, "the reply ended early; use fewer --tokens"
    return done.timings.ttft_s, done.timings.decode_tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    client = load_client(Settings.from_env())
    assert isinstance(client, LocalClient)
    ids = client.dialect.encode(PROMPT)
    print(
        f"model: {client.info.name} · {client.info.device} · {client.info.dtype} · torch threads {torch.get_num_threads()}"
    )
    print(f"prompt {len(ids)} tokens, {args.tokens} new tokens, greedy, median of {args.runs} runs\n")

    paths = {
        "model.generate (baseline)": lambda: plain_generate(client, ids, args.tokens),
        "client.stream (workbench)": lambda: client_stream(client, args.tokens),
        "generate + TextIteratorStreamer thread": lambda: streamer_thread(client, ids, args.tokens),
    }
    for run in paths.values():  # warm-up
        run()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(args.runs):
        for name, run in paths.items():
            samples[name].append(run())

    medians = {
        name: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
        for name, runs in samples.items()
    }
    print(f"{'path':42} {'TTFT ms':>9} {'decode tok/s':>13}")
    for name, (ttft, speed) in medians.items():
        print(f"{name:42} {ttft * 1000:9.1f} {speed:13.1f}")
    base = medians["model.generate (baseline)"][1]
    print()
    print(f"ratio client.stream / model.generate (decode tok/s): {medians['client.stream (workbench)'][1] / base:.2f}")
    print(
        f"ratio streamer thread / model.generate (decode tok/s): {medians['generate + TextIteratorStreamer thread'][1] / base:.2f}"
    )


if __name__ == "__main__":
    main()
