"""Streaming through the API server vs in-process `client.stream`, and concurrent streams.

    .venv/bin/python bench/bench_server.py [--runs 3] [--tokens 64] [--concurrency 1 2 4]

One process loads the embedded model once, serves it with the project's server
(uvicorn on 127.0.0.1, in a background thread) and reads the SSE stream with the
project's OpenAIClient (httpx). Client, server and model share one interpreter, so
the HTTP overhead measured here is an upper bound. Greedy, repetition penalty off,
the same prompt and number of new tokens on both paths, alternating, median of runs.
Then N streams at once through the server: aggregate tokens/s over the wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glm_client import Client, Done, LocalClient, Message, Settings, load_client
from glm_client.remote.openai import OpenAIClient
from glm_client.server import create_app, serve_in_thread

PROMPT = [Message.user("Write a long story about a dragon who learns to paint.")]


def one_stream(client: Client, tokens: int) -> Done:
    """A full greedy reply of exactly `tokens` tokens; its Done carries usage and timings."""
    done = None
    params = {"temperature": 0.0, "max_new_tokens": tokens, "repetition_penalty": 1.0}
    for event in client.stream(PROMPT, **params):
        if isinstance(event, Done):
            done = event
    assert done is not None and done.finish_reason != "error", done and done.error
    assert done.usage.completion_tokens == tokens, "the reply ended early; use fewer --tokens"
    return done


def compare(local: LocalClient, remote: OpenAIClient, runs: int, tokens: int) -> None:
    paths = {"in-process client.stream": local, "HTTP server + OpenAIClient": remote}
    for client in paths.values():  # warm-up
        one_stream(client, tokens)
    samples: dict[str, list[Done]] = {name: [] for name in paths}
    for _ in range(runs):
        for name, client in paths.items():
            samples[name].append(one_stream(client, tokens))
    medians = {
        name: (
            statistics.median(d.timings.ttft_s for d in dones),
            statistics.median(d.timings.decode_tokens_per_s for d in dones),
        )
        for name, dones in samples.items()
    }
    print(f"{'path':30} {'TTFT ms':>9} {'decode tok/s':>13}")
    for name, (ttft, speed) in medians.items():
        print(f"{name:30} {ttft * 1000:9.1f} {speed:13.1f}")
    (local_ttft, local_speed), (server_ttft, server_speed) = medians.values()
    print(f"\nratio server / in-process, decode tok/s: {server_speed / local_speed:.3f}  (target >= 0.95)")
    print(f"TTFT added by HTTP: {(server_ttft - local_ttft) * 1000:+.1f} ms\n")


def concurrent(remote: OpenAIClient, streams: int, tokens: int) -> tuple[float, float]:
    """Aggregate tokens/s of `streams` simultaneous replies, and their median TTFT."""
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        dones = list(pool.map(lambda _: one_stream(remote, tokens), range(streams)))
    wall = time.perf_counter() - started
    total = sum(done.usage.completion_tokens for done in dones)
    return total / wall, statistics.median(done.timings.ttft_s for done in dones)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL")}
    local = load_client(Settings.from_env(env))  # the embedded model, whatever the environment says
    assert isinstance(local, LocalClient)
    print(
        f"model: {local.info.name} · {local.info.device} · {local.info.dtype} · torch threads {torch.get_num_threads()}"
    )
    print(f"{args.tokens} new tokens, greedy, median of {args.runs} runs\n")
    with serve_in_thread(create_app(local)) as url:
        remote = OpenAIClient(url + "/v1")
        compare(local, remote, args.runs, args.tokens)
        print(f"{'streams':>7} {'aggregate tok/s':>16} {'median TTFT ms':>15}")
        for streams in args.concurrency:
            speed, ttft = concurrent(remote, streams, args.tokens)
            print(f"{streams:7d} {speed:16.1f} {ttft * 1000:15.1f}")


if __name__ == "__main__":
    main()
