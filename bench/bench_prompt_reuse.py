"""Prompt tokens the embedded model prefills again: the model's own ids kept, and running prompts shared.

    .venv/bin/python bench/bench_prompt_reuse.py [--chats 6] [--rounds 3] [--users 8]

Two things made the app prefill prompt tokens it had computed already (found in
bench_load.py's runs, where prefills took about a fifth of the decode thread):
- Own ids: the next round's prompt tokenizes a reply's text again, and that can split it
  otherwise than the model wrote it (" ec"+"olor" written, " e"+"color" re-tokenized), so
  the prompt cache matched only up to there. Now the prompt takes the kept ids for the same
  text (PromptCache.align). Measured by replaying recorded conversations: K Code Interpreter
  chats of R rounds are generated once (sampled, as the page does), then each round's
  prompt and reply are fed again, round-robin over the chats as users take turns, with the
  prompt re-tokenized as before and with the kept ids; the replay feeds the very same replies
  both times, so only the prompts differ.
- Running prompts: a prompt could start only from finished sequences' caches, so users who
  start at once with one long system prompt (Tool mode's tool schemas) each prefilled it.
  Now a prompt copies the start of a sequence still decoding, and one that arrives while
  that start is being prefilled waits for it. Measured with N Tool-mode first turns started
  0.3 s apart and all at once, with both off and on.

Prefilled tokens are counted at the model: the ids of every forward row longer than one
token (decode rows hold one).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_client import LocalClient, Message, load_client  # noqa: E402
from glm_client.config import GenerationParams  # noqa: E402
from glm_client.engines.decoding import SequenceDecoder  # noqa: E402
from glm_client.engines.prompt_cache import PromptCache  # noqa: E402
from glm_client.engines.transformers import TransformersEngine  # noqa: E402
from tools import get_tools  # noqa: E402
from ui.prompts import CODE_INTERPRETER_SYSTEM_PROMPT, TOOL_SYSTEM_PROMPT  # noqa: E402

FOLLOW_UPS = ["It printed an error. Fix the code.", "Now explain what the code does.", "Make the plot red."]
STAGGERS_S = (0.3, 0.0)  # users a moment apart, and at once (the decode thread admits them together)


@contextmanager
def prefill_counter(engine: TransformersEngine) -> Iterator[list[int]]:
    """Counts the prompt ids the model is fed (rows of more than one id) while the block runs."""
    fast = engine.fast
    assert fast is not None
    forward, counted = fast.forward, [0]

    def counting(rows: list[Any]) -> torch.Tensor:
        counted[0] += sum(len(row.ids) for row in rows if len(row.ids) > 1)
        return forward(rows)

    fast.forward = counting  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        del fast.forward  # the class's method again


def record_chats(client: LocalClient, chats: int, rounds: int) -> list[list[tuple[list[int], list[int]]]]:
    """K Code Interpreter chats of R rounds, generated once: each round's prompt ids and reply ids."""
    engine = client.engine
    assert isinstance(engine, TransformersEngine)
    stop_ids = set(client.dialect.stop_token_ids())
    system = Message.system(CODE_INTERPRETER_SYSTEM_PROMPT.format(cwd="/work"))
    recorded = []
    for chat in range(chats):
        ask = f"u{chat}: Write a python code block that prints 'u{chat}-marker' and plots [1, 2, 3] with matplotlib."
        messages = [system, Message.user(ask)]
        rounds_ids = []
        for number in range(rounds):
            prompt = client.render_prompt(messages).ids
            seed = chat * 100 + number  # the same chats in every run of the bench
            params = GenerationParams(temperature=0.3, max_new_tokens=200, loop_stop_tokens=0, seed=seed)
            reply = list(engine.generate(prompt, params, stop_ids))
            rounds_ids.append((prompt, reply))
            with engine.tokenizer_lock:
                text = engine.tokenizer.decode([token for token in reply if token not in stop_ids])
            messages += [Message.assistant(text), Message.user(FOLLOW_UPS[number % len(FOLLOW_UPS)])]
        recorded.append(rounds_ids)
    return recorded


def replay(engine: TransformersEngine, recorded: list[list[tuple[list[int], list[int]]]], own_ids: bool) -> int:
    """Prompt ids prefilled feeding every round's prompt and reply again, the chats taking turns."""
    assert engine.prompt_cache is not None and engine.decoder is not None
    engine.prompt_cache.clear()
    once = GenerationParams(temperature=0.0, max_new_tokens=1)
    respell = engine.decoder.respell
    if not own_ids:
        engine.decoder.respell = None  # the prompt as re-tokenized
    try:
        with prefill_counter(engine) as counted:
            for number in range(len(recorded[0])):
                for chat in recorded:
                    prompt, reply = chat[number]
                    list(engine.generate(prompt + reply, once, set()))
    finally:
        engine.decoder.respell = respell
    return counted[0]


def own_ids(client: LocalClient, chats: int, rounds: int) -> None:
    engine = client.engine
    assert isinstance(engine, TransformersEngine)
    recorded = record_chats(client, chats, rounds)
    prompts = sum(len(prompt) for chat in recorded for prompt, _ in chat)
    replies = sum(len(reply) for chat in recorded for _, reply in chat)
    before, after = replay(engine, recorded, own_ids=False), replay(engine, recorded, own_ids=True)
    print(f"## Own ids: {chats} Code Interpreter chats x {rounds} rounds ({prompts} prompt ids, {replies} reply ids)")
    # the replay feeds each reply as prompt too: those ids are counted out
    before, after = before - replies, after - replies
    print(f"prompt ids prefilled, the replies re-tokenized: {before}; with the model's own ids: {after}")
    print(f"ratio {before / after:.2f}")


def tool_turn(client: LocalClient, tools: list[dict[str, Any]], user: int) -> None:
    messages = [Message.system(TOOL_SYSTEM_PROMPT), Message.user(f"u{user}: What time is it in UTC?")]
    list(client.stream(messages, tools=tools, max_new_tokens=16))


def shared_starts(client: LocalClient, users: int) -> None:
    engine = client.engine
    assert isinstance(engine, TransformersEngine) and engine.prompt_cache is not None
    tools = get_tools()
    take, start_in_prefill = PromptCache.take, SequenceDecoder._start_in_prefill
    print(f"\n## Running prompts: {users} Tool-mode first turns, 16 new tokens each")
    for stagger in STAGGERS_S:
        for sharing in (False, True):
            engine.prompt_cache.clear()
            if not sharing:  # as before: only finished sequences' caches, and no waiting for one
                PromptCache.take = lambda self, ids, in_use=(): take(self, ids)  # type: ignore[method-assign]
                SequenceDecoder._start_in_prefill = lambda self, sequence: False  # type: ignore[method-assign]
            try:
                with prefill_counter(engine) as counted:
                    started = time.perf_counter()
                    threads = []
                    for user in range(users):
                        thread = threading.Thread(target=tool_turn, args=(client, tools, user))
                        thread.start()
                        threads.append(thread)
                        time.sleep(stagger)
                    for thread in threads:
                        thread.join()
                    wall = time.perf_counter() - started
            finally:
                PromptCache.take, SequenceDecoder._start_in_prefill = take, start_in_prefill  # type: ignore[method-assign]
            label = "copying running prompts" if sharing else "finished sequences only"
            print(f"{stagger} s apart, {label:24} prefilled {counted[0]:5} ids, all replies done in {wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    args = parser.parse_args()
    client = load_client()
    assert isinstance(client, LocalClient) and isinstance(client.engine, TransformersEngine)
    own_ids(client, args.chats, args.rounds)
    shared_starts(client, args.users)


if __name__ == "__main__":
    main()
