"""Engine figures on the embedded model: decode speed, TTFT, quality, prompt cache, concurrency, memory, load.

    .venv/bin/python bench/bench_engine.py [--runs 3] [--tokens 128] [--quick]

(a) the workbench's streaming path, `client.stream`, with each engine it offers here:
    transformers (packed int4 weights, the embedded default; and bf16, QUANTIZE=none)
    and llama.cpp when `llama-cpp-python` is installed (`make bench-deps`);
(b) plain transformers `model.generate` on the bf16 model;
(c) plain llama-cpp-python `Llama.generate` on the same GGUF (when installed).
Greedy, the same prompt, repetition penalty off, the prompt cache emptied before
each run so every TTFT is a cold prefill; medians of --runs. Every run (after a
warm-up) is a fresh process of its own, the paths taking turns, as a path would run
in the app: two engines in one process fight over the cores (see
loader.in_passing_thread). Every path uses torch's thread count. Then: quality against the reference, the prompt cache
over a 10-turn chat, 4 chats at once, RSS over 50 turns, and start-to-first-token.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from glm_client import Done, LocalClient, Message, Settings, TextDelta, load_client  # noqa: E402
from glm_client.config import GenerationParams  # noqa: E402
from glm_client.engines import llamacpp  # noqa: E402
from glm_client.engines.fast_llama import KVCache  # noqa: E402
from glm_client.engines.quality import (  # noqa: E402
    QUALITY_TEXT,
    clear_disagreements,
    decoder_logits,
    perplexity,
    reference_logits,
)
from glm_client.engines.transformers import TransformersEngine  # noqa: E402

PROMPT = [Message.user("Write a long story about a dragon who learns to paint.")]
GREEDY = {"temperature": 0.0, "repetition_penalty": 1.0, "loop_stop_tokens": 0}  # every reply its full length
QUALITY_PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain photosynthesis in two sentences.",
    "List three uses of a paperclip.",
    "How do I boil an egg?",
]
CHAT_TURNS = [
    "Hi! Can you help me plan a small vegetable garden?",
    "Which vegetables grow well in partial shade?",
    "How often should I water lettuce?",
    "What about tomatoes?",
    "Should I use compost?",
    "How do I keep slugs away?",
    "When should I plant carrots?",
    "Can I grow herbs next to them?",
    "Which herbs are easiest for beginners?",
    "Thanks! Can you summarise the plan in three bullet points?",
]


@dataclass
class Sample:
    ttft_s: float
    tokens_per_s: float


def engine_settings(engine: str, quantize: str = "auto") -> Settings:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL", "ENGINE", "QUANTIZE")}
    return Settings.from_env({**env, "ENGINE": engine, "QUANTIZE": quantize})


def empty_prompt_cache(client: LocalClient) -> None:
    cache = getattr(client.engine, "prompt_cache", None)
    if cache is not None:
        cache.clear()


def stream_once(client: LocalClient, messages: list[Message], tokens: int, **params: object) -> Done:
    done = None
    for event in client.stream(messages, **{**GREEDY, "max_new_tokens": tokens, **params}):
        if isinstance(event, Done):
            done = event
    assert done is not None and done.finish_reason != "error", done and done.error
    return done


def workbench_run(client: LocalClient, tokens: int) -> Sample:
    empty_prompt_cache(client)
    done = stream_once(client, PROMPT, tokens)
    assert done.usage.completion_tokens >= tokens // 2, "the reply ended early; use fewer --tokens"
    return Sample(done.timings.ttft_s, done.timings.decode_tokens_per_s)


class FirstTokenTimer:
    """A generate() streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.first: float | None = None
        self._prompt_seen = False

    def put(self, _value: torch.Tensor) -> None:
        if self._prompt_seen and self.first is None:
            self.first = time.perf_counter()
        self._prompt_seen = True

    def end(self) -> None:
        pass


def generate_run(model: object, ids: list[int], tokens: int) -> Sample:
    timer = FirstTokenTimer()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(  # type: ignore[attr-defined]
            torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=timer
        )
    end = time.perf_counter()
    assert timer.first is not None
    return Sample(timer.first - start, (tokens - 1) / (end - timer.first))


def llama_run(llm: object, ids: list[int], tokens: int) -> Sample:
    llm.reset()  # type: ignore[attr-defined]  # no prefix reuse from the previous run
    start = time.perf_counter()
    first = None
    produced = 0
    for _token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):  # type: ignore[attr-defined]
        first = first or time.perf_counter()
        produced += 1
        if produced == tokens:
            break
    end = time.perf_counter()
    assert first is not None
    return Sample(first - start, (produced - 1) / (end - first))


def medians(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.ttft_s for s in samples), statistics.median(s.tokens_per_s for s in samples))


# The workbench's engines: label → (ENGINE, QUANTIZE).
ENGINES = {
    "transformers int4": ("transformers", "auto"),
    "transformers bf16": ("transformers", "none"),
    "llama.cpp": ("llamacpp", "auto"),
}
GENERATE = "transformers model.generate (bf16)"
LLAMA_CPP_PYTHON = "llama-cpp-python Llama.generate (Q4_1)"


def engine_client(label: str) -> LocalClient:
    client = load_client(engine_settings(*ENGINES[label]))
    assert isinstance(client, LocalClient)
    return client


def speed_samples(path: str, runs: int, tokens: int) -> list[Sample]:
    """A warm-up run, then `runs` timed ones of one path; in a child process of its own."""
    if path in ENGINES:
        client = engine_client(path)

        def run() -> Sample:
            return workbench_run(client, tokens)

    else:
        reference = engine_client("transformers bf16")  # its model for generate; its dialect for the prompt ids
        ids = reference.dialect.encode(PROMPT)
        if path == GENERATE:

            def run() -> Sample:
                return generate_run(reference.engine.model, ids, tokens)

        else:
            from llama_cpp import Llama

            threads = torch.get_num_threads()
            llm = Llama(str(llamacpp_gguf()), n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)

            def run() -> Sample:
                return llama_run(llm, ids, tokens)

    run()
    return [run() for _ in range(runs)]


def in_child(*args: object) -> str:
    """Run `bench_engine.py --child ARGS` in a fresh process; its standard output."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def speed_table(paths: list[str], runs: int, tokens: int) -> dict[str, Sample]:
    """Each run of each path in a fresh process, the paths taking turns, so machine noise hits all alike."""
    samples: dict[str, list[Sample]] = {path: [] for path in paths}
    for _ in range(runs):
        for path in paths:
            output = in_child("speed", path, 1, tokens).splitlines()[-1]
            samples[path] += [Sample(**sample) for sample in json.loads(output)]
    result = {path: medians(path_samples) for path, path_samples in samples.items()}
    print("| path | TTFT ms | decode tok/s |\n| --- | --- | --- |")
    for name, sample in result.items():
        print(f"| {name} | {sample.ttft_s * 1000:.0f} | {sample.tokens_per_s:.1f} |")
    return result


def quality(labels: list[str]) -> None:
    """Greedy choices along the reference's replies to QUALITY_PROMPTS, and perplexity on QUALITY_TEXT."""
    reference = engine_client("transformers bf16")
    engine = reference.engine
    slow = type(engine)(engine.model, engine.tokenizer, engine.info)  # no fast path: the reference loop
    stop_ids = set(reference.dialect.stop_token_ids())
    replies = []
    for prompt in QUALITY_PROMPTS:
        ids = reference.dialect.encode([Message.user(prompt)])
        greedy = list(slow.generate(ids, GenerationParams(temperature=0.0, max_new_tokens=48), stop_ids))
        replies.append((ids, greedy, reference_logits(engine.model, ids, greedy)))
    text = engine.tokenizer(QUALITY_TEXT)["input_ids"]
    base = perplexity(reference_logits(engine.model, text[:1], text[1:]), text[1:])
    positions = sum(len(greedy) for _, greedy, _ in replies)
    print(
        f"Reference: transformers' own forward in bf16. {len(QUALITY_PROMPTS)} prompts, {positions} positions along "
        f"its greedy replies; perplexity on a fixed {len(text)}-token text: reference {base:.3f}\n"
    )
    print("| path | same top token | differs on a clear lead | perplexity | vs reference |")
    print("| --- | --- | --- | --- | --- |")
    for label in labels:
        decoder = (reference if label == "transformers bf16" else engine_client(label)).engine.decoder
        same = clear = 0
        for ids, greedy, expected in replies:
            logits = decoder_logits(decoder, ids, greedy)
            same += int((logits.argmax(-1) == expected.argmax(-1)).sum())
            clear += clear_disagreements(expected, logits)
        value = perplexity(decoder_logits(decoder, text[:1], text[1:]), text[1:])
        print(f"| {label} | {same}/{positions} | {clear} | {value:.3f} | {100 * (value / base - 1):+.1f}% |")


def prompt_cache(label: str, runs: str = "3", tokens: int = 32) -> None:
    """TTFT of turn 1 and turn 10 of a 10-turn chat, with the prompt cache and without; medians of `runs` chats."""
    client = engine_client(label)
    stream_once(client, [Message.user("Hello!")], 8)  # warm-up: the decode thread and its OpenMP team start
    cache = client.engine.prompt_cache
    limit = cache.max_entries
    for name, keep in (("with prompt cache", True), ("without", False)):
        cache.max_entries = limit if keep else 0
        firsts, lasts = [], []
        for _ in range(int(runs)):
            cache.clear()
            conversation = [Message.system("You are a helpful gardening assistant.")]
            ttfts, prompt_tokens = [], []
            for turn in CHAT_TURNS:
                conversation.append(Message.user(turn))
                reply = []
                done = None
                for event in client.stream(conversation, **GREEDY, max_new_tokens=tokens):
                    if isinstance(event, TextDelta):
                        reply.append(event.text)
                    elif isinstance(event, Done):
                        done = event
                assert done is not None and done.finish_reason != "error"
                ttfts.append(done.timings.ttft_s)
                prompt_tokens.append(done.usage.prompt_tokens)
                conversation.append(Message.assistant("".join(reply)))
            firsts.append(ttfts[0])
            lasts.append(ttfts[-1])
        first, last = statistics.median(firsts), statistics.median(lasts)
        print(
            f"{label} {name}: turn 1 TTFT {first * 1000:.0f} ms ({prompt_tokens[0]} prompt tokens), "
            f"turn 10 {last * 1000:.0f} ms ({prompt_tokens[-1]} tokens): ratio {last / first:.2f}"
        )
    cache.max_entries = limit
    if isinstance(client.engine, TransformersEngine):  # llama.cpp's sequences are never copied
        shared_system_prompt(client, label, tokens)


def shared_system_prompt(client: LocalClient, label: str, tokens: int) -> None:
    """Two chats with one long system prompt take turns (two users of one page): the tokens each later turn
    prefills when a chat gets a copy of the other's shared start, and when it takes the other's cache (as before)."""
    cache = client.engine.prompt_cache
    system = Message.system(" ".join(["You are a helpful gardening assistant."] + QUALITY_PROMPTS * 8))
    prefilled: dict[str, list[int]] = {}
    for name, copies in (("copied", True), ("taken", False)):
        cache.clear()
        original = KVCache.copy_prefix
        if not copies:
            KVCache.copy_prefix = lambda self, length: None  # type: ignore[method-assign,assignment,return-value]
        try:
            chats = [[system], [system]]
            prefilled[name] = []
            for turn in range(3):
                for index, chat in enumerate(chats):
                    chat.append(Message.user(CHAT_TURNS[3 * index + turn]))  # each chat its own questions
                    reused = cache.reused_tokens
                    done = stream_once(client, chat, tokens, **GREEDY)
                    prefilled[name].append(done.usage.prompt_tokens - (cache.reused_tokens - reused))
                    chat.append(Message.assistant(done.raw))
        finally:
            KVCache.copy_prefix = original  # type: ignore[method-assign]
    copied, taken = sum(prefilled["copied"][2:]), sum(prefilled["taken"][2:])
    print(
        f"{label}, two chats sharing a {prefilled['copied'][0]}-token start, taking turns: turns 2-3 of both prefilled "
        f"{copied} tokens with copies of the shared start, {taken} taking the other chat's cache: ratio {taken / copied:.1f}"
    )


def concurrency(label: str, tokens: int = 128, streams: int = 4) -> None:
    """`streams` chats at once: aggregate tokens/s against one chat alone, and each chat's share."""
    client = engine_client(label)
    prompts = [[Message.user(f"Tell me a story about a {animal}.")] for animal in ("cat", "dog", "fox", "owl")]

    def timed(messages: list[Message]) -> tuple[int, float]:
        start = time.perf_counter()
        done = stream_once(client, messages, tokens)
        return done.usage.completion_tokens, time.perf_counter() - start

    timed(prompts[0])  # warm-up
    empty_prompt_cache(client)
    alone = [timed(prompts[i]) for i in range(streams)]
    single = statistics.median(count / seconds for count, seconds in alone)
    empty_prompt_cache(client)
    results: dict[int, tuple[int, float]] = {}

    def worker(index: int) -> None:
        results[index] = timed(prompts[index])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    aggregate = sum(count for count, _ in results.values()) / wall
    shares = [count / seconds / aggregate for count, seconds in results.values()]
    print(
        f"{label}: 1 chat {single:.1f} tok/s (tokens / wall, prefill included) · {streams} chats at once "
        f"{aggregate:.1f} tok/s aggregate = {aggregate / single:.2f}x · each chat's share: "
        + ", ".join(f"{share:.0%}" for share in shares)
    )


def memory(label: str) -> None:
    """RSS after loading, then over one 50-turn chat and over 50 one-turn chats."""
    import psutil

    client = engine_client(label)
    process = psutil.Process()
    mib = 1 << 20

    def turn(messages: list[Message]) -> str:
        events = client.stream(messages, temperature=0.0, max_new_tokens=24)
        return "".join(event.text for event in events if isinstance(event, TextDelta))

    line = f"{label}: RSS after load {process.memory_info().rss / mib:.0f} MiB; one chat, turn"
    chat: list[Message] = []
    for index in range(50):
        chat.append(
            Message.user(f"Question {index}: name an animal that starts with the letter {chr(65 + index % 26)}.")
        )
        chat.append(Message.assistant(turn(chat)))
        if index + 1 in (1, 10, 25, 50):
            tokens = len(client.dialect.encode(chat))
            line += f" {index + 1}: {process.memory_info().rss / mib:.0f} MiB ({tokens} tokens),"
    line += " then a new chat each turn, turn"
    for index in range(50):
        turn([Message.user(f"New chat {index}: name a colour.")])
        if index + 1 in (1, 10, 25, 50):
            line += f" {index + 1}: {process.memory_info().rss / mib:.0f} MiB,"
    print(line.rstrip(","))


def first_token(label: str) -> None:
    """What the app does at start (streamlit, the model from the warm cache) up to the first token."""
    import streamlit  # noqa: F401  # the app imports it before anything else

    client = engine_client(label)
    loaded = time.time()
    for event in client.stream([Message.user("Hi")], temperature=0.0, max_new_tokens=4):
        if isinstance(event, TextDelta):
            print(json.dumps({"loaded": loaded, "first": time.time()}))
            return


def load_time(label: str, runs: int) -> None:
    """Process start (interpreter, imports, model load from the warm cache) to the first token."""
    totals, loads = [], []
    for _ in range(runs + 1):  # the first run warms the OS file cache
        start = time.time()
        times = json.loads(in_child("first_token", label).splitlines()[-1])
        totals.append(times["first"] - start)
        loads.append(times["loaded"] - start)
    print(
        f"{label}: start to first token {statistics.median(totals[1:]):.1f} s "
        f"(start to model loaded {statistics.median(loads[1:]):.1f} s), median of {runs}"
    )


CHILD_SECTIONS = {
    "quality": lambda *labels: quality(list(labels)),
    "prompt_cache": prompt_cache,
    "concurrency": concurrency,
    "memory": memory,
    "first_token": first_token,
}


def child(section: str, *args: str) -> None:
    if section == "speed":
        path, runs, tokens = args
        samples = speed_samples(path, int(runs), int(tokens))
        print(json.dumps([vars(sample) for sample in samples]))
    else:
        CHILD_SECTIONS[section](*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="speed table only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    have_llama = llamacpp.available()
    labels = [label for label in ENGINES if have_llama or ENGINES[label][0] != "llamacpp"]
    print(
        f"# Engines on the embedded SmolLM2-135M-Instruct, CPU, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print(f"{args.tokens} new tokens, greedy, median of {args.runs} runs, each run in a fresh process\n")
    paths = [*labels, GENERATE, *([LLAMA_CPP_PYTHON] if have_llama else [])]
    result = speed_table(paths, args.runs, args.tokens)
    auto = "llama.cpp" if have_llama else "transformers int4"  # what ENGINE=auto picks for the embedded model
    print(f"\n(a) = workbench · {auto}, what ENGINE=auto picks here")
    print(f"a/b = {result[auto].tokens_per_s / result[GENERATE].tokens_per_s:.2f}")
    if have_llama:
        print(f"a/c = {result[auto].tokens_per_s / result[LLAMA_CPP_PYTHON].tokens_per_s:.2f}")
        without = result["transformers int4"].tokens_per_s
        print(
            f"without llama-cpp-python (transformers int4): a/b = {without / result[GENERATE].tokens_per_s:.2f}, "
            f"a/c = {without / result[LLAMA_CPP_PYTHON].tokens_per_s:.2f}"
        )
    if args.quick:
        return

    print("\n## Quality\n")
    print(in_child("quality", *labels), end="")
    for section, title in (
        ("prompt_cache", "Prompt cache: a 10-turn chat, 32-token replies, median of --runs chats"),
        ("concurrency", "Concurrency: 4 chats at once, 128 tokens each"),
        ("memory", "Memory (RSS, psutil)"),
    ):
        print(f"\n## {title}\n")
        for label in labels:
            print(in_child(section, label, *([args.runs] if section == "prompt_cache" else [])), end="")
    print("\n## Start to first token (fresh process, warm model cache)\n")
    for label in labels:
        load_time(label, args.runs)


def llamacpp_gguf() -> Path:
    from glm_client import embedded

    return embedded.locate_gguf()


if __name__ == "__main__":
    main()
