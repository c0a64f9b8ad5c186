"""The optional llama.cpp engine on the embedded GGUF; skipped when llama-cpp-python is not installed.

Its Q4_1 weights are not the bf16 reference's, so these check behaviour, not equality
with transformers: determinism, limits, cancel, stop ids, the tokenizer, the prompt
cache, batching, and constrained decoding.
"""

from __future__ import annotations

import os
import threading

import pytest

pytest.importorskip("llama_cpp")

from glm_client import Done, LocalClient, Message, TextDelta, ToolCall, embedded
from glm_client.config import GenerationParams
from glm_client.engines.decoding import Row

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0.0, "max_new_tokens": 24}


def run(client: LocalClient, messages: list[Message], **params) -> tuple[str, Done]:
    events = list(client.stream(messages, **{**GREEDY, **params}))
    done = events[-1]
    assert isinstance(done, Done)
    return "".join(event.text for event in events if isinstance(event, TextDelta)), done


def test_info_names_the_engine(llama_client):
    assert (llama_client.info.backend, llama_client.info.dialect) == ("llamacpp", "chat_template")
    assert llama_client.info.context_length == 8192


def test_greedy_reply_is_sensible_and_deterministic(llama_client):
    messages = [Message.user("What is the capital of France?")]
    first, done = run(llama_client, messages)
    llama_client.engine.prompt_cache.clear()
    second, _ = run(llama_client, messages)
    assert "Paris" in first and first == second
    assert done.usage.completion_tokens > 0 and done.timings.decode_tokens_per_s > 0


def test_max_new_tokens_is_respected(llama_client):
    _, done = run(llama_client, [Message.user("Tell me a very long story about dragons.")], max_new_tokens=7)
    assert done.usage.completion_tokens == 7 and done.finish_reason == "length"


def test_stop_ids_end_the_reply(llama_client):
    engine = llama_client.engine
    ids = llama_client.dialect.encode([Message.user("Count from one to ten in words.")])
    params = GenerationParams(temperature=0.0, max_new_tokens=20)
    full = list(engine.generate(ids, params, set()))
    cut = list(engine.generate(ids, params, {full[5]}))
    assert cut == full[: full.index(full[5])]


def test_cancel_stops_within_a_token(llama_client):
    cancel = threading.Event()
    produced, done = 0, None
    for event in llama_client.stream(
        [Message.user("Tell me a long story.")], temperature=0.0, max_new_tokens=200, cancel=cancel
    ):
        if isinstance(event, TextDelta):
            produced += 1
            if produced == 3:
                cancel.set()
        elif isinstance(event, Done):
            done = event
    assert done is not None and done.finish_reason == "cancelled" and done.usage.completion_tokens <= 5


def test_the_hf_tokenizer_gives_llama_cpp_ids():
    from llama_cpp import Llama

    vocab = Llama(str(embedded.locate_gguf()), vocab_only=True, verbose=False)
    from transformers import AutoTokenizer

    from glm_client.config import default_cache_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded.cache_path(default_cache_dir(os.environ)))
    for text in ["Hello world, how are you?", 'émigré 123 <tool_call> {"a": 1}', "def f(x):\n    return x * 2"]:
        assert vocab.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"], text


# llama.cpp's logits move by up to ~0.6 (on a scale of ~30) with how a sequence is cut into
# batches (measured on the embedded model), so these compare within that, not bit for bit:
# a cache that held the wrong tokens, or another sequence's, is off by far more.
LOGIT_DRIFT = 1.0


def last_logits(model, pieces: list[list[int]], cache=None):
    cache = cache or model.new_cache(0)
    for piece in pieces:
        logits = model.forward([Row(cache, piece)])[0]
    return logits, cache


def test_a_continued_or_truncated_sequence_gives_the_same_logits(llama_client):
    model = llama_client.engine.llama
    ids = llama_client.dialect.encode([Message.user("Hi! Can you help me plan a garden? " * 6)])
    whole, first = last_logits(model, [ids])
    continued, second = last_logits(model, [ids[:30], ids[30:60], *([token] for token in ids[60:])])
    # what the prompt cache does with a kept sequence: drop its tail, feed the new tokens
    _, third = last_logits(model, [ids[:50], [7, 8, 9, 10]])
    third.truncate(50)
    truncated, _ = last_logits(model, [ids[50:]], third)
    other, fourth = last_logits(model, [ids[:20]])
    for logits in (continued, truncated):
        assert (logits - whole).abs().max() < LOGIT_DRIFT
        assert logits.argmax() == whole.argmax()
    assert (other - whole).abs().max() > 3 * LOGIT_DRIFT  # the tolerance tells different contexts apart
    for cache in (first, second, third, fourth):
        cache.release()


def test_a_row_batched_with_other_sequences_gives_its_own_logits(llama_client):
    model = llama_client.engine.llama
    ids = llama_client.dialect.encode([Message.user("Which vegetables grow well in partial shade?")])
    alone, first = last_logits(model, [ids])
    _, mine = last_logits(model, [ids[:-1]])
    _, other = last_logits(model, [ids[:10]])
    _, third = last_logits(model, [[1, 2, 3]])
    batched = model.forward([Row(other, [5]), Row(mine, ids[-1:]), Row(third, [4, 5, 6])])
    assert batched.shape[0] == 3
    assert (batched[1] - alone).abs().max() < LOGIT_DRIFT and batched[1].argmax() == alone.argmax()
    for cache in (first, mine, other, third):
        cache.release()


def test_the_next_turn_reuses_the_previous_one(llama_client):
    engine = llama_client.engine
    engine.prompt_cache.clear()
    conversation: list[Message] = []
    before = engine.prompt_cache.reused_tokens
    for turn in ["Hi! Can you help me plan a garden?", "Which vegetables grow in shade?"]:
        conversation.append(Message.user(turn))
        text, _ = run(llama_client, conversation)
        assert text.strip()
        conversation.append(Message.assistant(text))
    # turn 2 started from turn 1's prompt and reply
    assert engine.prompt_cache.reused_tokens - before >= len(llama_client.dialect.encode(conversation[:1]))


def test_concurrent_chats_are_batched_and_each_gets_its_reply(llama_client):
    engine = llama_client.engine
    prompts = [[Message.user(f"Tell me a story about a {animal}.")] for animal in ("cat", "dog", "fox", "owl")]
    engine.prompt_cache.clear()
    engine.decoder.batch_sizes.clear()
    results: dict[int, tuple[str, Done]] = {}

    def worker(index: int) -> None:
        results[index] = run(llama_client, prompts[index])

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(results) == [0, 1, 2, 3]
    for text, done in results.values():
        assert done.finish_reason == "length" and done.usage.completion_tokens == GREEDY["max_new_tokens"]
        assert text.strip()
    assert max(engine.decoder.batch_sizes) == 4


def test_a_forced_tool_call_works_on_llama_cpp(llama_client):
    pytest.importorskip("xgrammar")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    events = list(
        llama_client.stream(
            [Message.user("Weather in Paris?")], tools, temperature=0.0, max_new_tokens=64, force_tool="get_weather"
        )
    )
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert calls and calls[0].name == "get_weather" and "city" in calls[0].arguments
