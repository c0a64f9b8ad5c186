"""The real embedded model through the real client: determinism, limits, cancel, concurrency, context."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from glm_client import Done, LocalClient, Message, Notice, TextDelta
from glm_client.engines.prompt_cache import PromptCache
from glm_client.engines.transformers import TransformersEngine

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0.0, "max_new_tokens": 24}


def run(client, messages, **params):
    events = list(client.stream(messages, **params))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    done = events[-1]
    assert isinstance(done, Done)
    return text, done, events


def test_greedy_reply_is_non_empty_and_deterministic(embedded_client):
    messages = [Message.user("What is the capital of France?")]
    first, done, _ = run(embedded_client, messages, **GREEDY)
    second, _, _ = run(embedded_client, messages, **GREEDY)
    assert first.strip() and first == second
    assert "Paris" in first
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    assert done.timings.ttft_s > 0 and done.timings.decode_tokens_per_s > 0


def test_stream_matches_plain_generate_token_for_token(embedded_client):
    """The reference loop (the model's own forward) matches generate; the packed fast path is held
    to this loop in tests/test_engine_fast.py (int4 weights can't match bf16 token for token)."""
    messages = [Message.user("Write a short poem about the sea.")]
    ids = embedded_client.dialect.encode(messages)
    engine = TransformersEngine(
        embedded_client.engine.model, embedded_client.engine.tokenizer, embedded_client.engine.info
    )
    reference = LocalClient(engine, embedded_client.dialect)
    with torch.inference_mode():
        expected = engine.model.generate(
            torch.tensor([ids]), max_new_tokens=20, min_new_tokens=20, do_sample=False, repetition_penalty=1.1
        )[0, len(ids) :].tolist()
    text, _, _ = run(reference, messages, temperature=0.0, max_new_tokens=20, repetition_penalty=1.1)
    assert text == embedded_client.dialect.decode(expected)


def test_max_new_tokens_is_respected(embedded_client):
    _, done, _ = run(
        embedded_client, [Message.user("Tell me a very long story about dragons.")], temperature=0.0, max_new_tokens=7
    )
    assert done.usage.completion_tokens == 7
    assert done.finish_reason == "length"


def test_a_reply_that_loops_stops_with_a_notice_unless_the_guard_is_off(embedded_client):
    messages = [Message.user("Write the word 'hello' 100 times.")]  # the 135M model loops on it greedily
    looped, done, events = run(embedded_client, messages, temperature=0.0, max_new_tokens=160)
    assert done.finish_reason == "stop" and done.usage.completion_tokens < 100
    assert [type(event) for event in events[-2:]] == [Notice, Done] and "loop_stop_tokens" in events[-2].message
    full, done, events = run(embedded_client, messages, temperature=0.0, max_new_tokens=160, loop_stop_tokens=0)
    assert done.finish_reason == "length" and done.usage.completion_tokens == 160
    assert full.startswith(looped) and len(full) > 2 * len(looped)
    assert not any(isinstance(event, Notice) for event in events)


def test_stop_strings_end_the_reply(embedded_client):
    messages = [Message.user("Count from one to ten in words.")]
    full, _, _ = run(embedded_client, messages, temperature=0.0, max_new_tokens=40)
    stop = full[10:13]  # whatever the model writes, cut in the middle of it
    cut, done, _ = run(embedded_client, messages, temperature=0.0, max_new_tokens=40, stop=[stop])
    assert len(stop) == 3 and cut == full[: full.index(stop)]
    assert done.finish_reason == "stop" and done.usage.completion_tokens < 40


def test_cancel_stops_generation_within_a_token(embedded_client):
    cancel = threading.Event()
    produced = 0
    done = None
    for event in embedded_client.stream(
        [Message.user("Tell me a long story.")], temperature=0.0, max_new_tokens=200, cancel=cancel
    ):
        if isinstance(event, TextDelta):
            produced += 1
            if produced == 3:
                cancel.set()
        if isinstance(event, Done):
            done = event
    assert done is not None and done.finish_reason == "cancelled"
    assert done.usage.completion_tokens <= 5


def test_closing_the_stream_stops_the_engine(embedded_client):
    stream = embedded_client.stream([Message.user("Tell me a long story.")], temperature=0.0, max_new_tokens=200)
    next(stream)
    stream.close()  # what a stopped Streamlit script does to the generator
    with pytest.raises(StopIteration):
        next(stream)


def test_two_concurrent_streams_each_get_their_own_output(embedded_client):
    # Without the prompt cache: a prompt prefilled on top of a cached prefix can differ from
    # one prefilled whole in a near-tie (tests/test_engine_fast.py), and this is about batching.
    engine = embedded_client.engine
    uncached = LocalClient(
        TransformersEngine(engine.model, engine.tokenizer, engine.info, engine.fast, PromptCache(0, 0)),
        embedded_client.dialect,
    )
    prompts = ["What is the capital of France?", "Name three colours of the rainbow."]
    expected = [run(uncached, [Message.user(p)], **GREEDY)[0] for p in prompts]
    results: dict[int, str] = {}

    def worker(index: int) -> None:
        results[index] = run(uncached, [Message.user(prompts[index])], **GREEDY)[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [results[0], results[1]] == expected
    assert expected[0] != expected[1]


def test_sampling_with_a_seed_is_reproducible(embedded_client):
    messages = [Message.user("Invent a name for a cat.")]
    params = {"temperature": 1.0, "top_p": 0.9, "max_new_tokens": 12, "seed": 7}
    cache = embedded_client.engine.prompt_cache
    first = run(embedded_client, messages, **params)[0]
    reused = cache.reused_tokens
    assert run(embedded_client, messages, **params)[0] == first
    assert cache.reused_tokens > reused  # the second run started from the first one's cache


def test_a_conversation_longer_than_the_context_drops_old_turns(embedded_client):
    engine = embedded_client.engine
    small = TransformersEngine(engine.model, engine.tokenizer, dataclasses.replace(engine.info, context_length=160))
    client = LocalClient(small, embedded_client.dialect)
    messages = [Message.system("You are terse.")]
    for i in range(12):
        messages += [Message.user(f"Remember the number {i} please."), Message.assistant(f"I will remember {i}.")]
    messages.append(Message.user("What is 2+2?"))
    text, done, events = run(client, messages, temperature=0.0, max_new_tokens=16)
    notices = [e for e in events if isinstance(e, Notice)]
    assert notices and "oldest message(s) were left out" in notices[0].message
    assert done.finish_reason in ("stop", "length") and text.strip()
    assert done.usage.prompt_tokens + done.usage.completion_tokens <= 160


def test_a_single_message_too_long_for_the_context_is_a_clear_error(embedded_client):
    engine = embedded_client.engine
    small = TransformersEngine(engine.model, engine.tokenizer, dataclasses.replace(engine.info, context_length=64))
    client = LocalClient(small, embedded_client.dialect)
    _, done, _ = run(client, [Message.user("word " * 200)], temperature=0.0, max_new_tokens=16)
    assert done.finish_reason == "error"
    assert "too long for the model's 64-token context" in done.error


def test_model_info_describes_the_embedded_model(embedded_client):
    info = embedded_client.info
    assert info.name.startswith("SmolLM2-135M-Instruct")
    assert (info.backend, info.dialect, info.device, info.dtype) == ("transformers", "chat_template", "cpu", "bfloat16")
    assert info.context_length == 8192
