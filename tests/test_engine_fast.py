"""The packed CPU path of the transformers engine against the reference loop: quality, prompt cache, batching.

No timings are asserted here; bench/bench_engine.py prints them.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from glm_client import Done, LocalClient, Message, TextDelta
from glm_client.config import GenerationParams
from glm_client.engines.decoding import PREFILL_CHUNK, Row
from glm_client.engines.fast_llama import FastLlama
from glm_client.engines.prompt_cache import PromptCache, shared_prefix
from glm_client.engines.quality import (
    PERPLEXITY_TOLERANCE,
    QUALITY_TEXT,
    clear_disagreements,
    decoder_logits,
    perplexity,
    reference_logits,
)
from glm_client.engines.transformers import TransformersEngine
from tests.test_native_attention import has_compiler

pytestmark = pytest.mark.model

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain photosynthesis in two sentences.",
    "List three uses of a paperclip.",
]
GREEDY = {"temperature": 0.0, "max_new_tokens": 32}


def reply(client: LocalClient, messages: list[Message], **params) -> str:
    events = list(client.stream(messages, **{**GREEDY, **params}))
    assert isinstance(events[-1], Done) and events[-1].finish_reason != "error", events[-1]
    return "".join(event.text for event in events if isinstance(event, TextDelta))


@pytest.fixture(scope="module")
def reference(embedded_client) -> LocalClient:
    """transformers' own forward in our token loop: the path every fast one is held to."""
    engine = embedded_client.engine
    return LocalClient(TransformersEngine(engine.model, engine.tokenizer, engine.info), embedded_client.dialect)


def with_fast(client: LocalClient, fast: FastLlama, prompt_cache: PromptCache | None = None) -> LocalClient:
    engine = client.engine
    return LocalClient(
        TransformersEngine(engine.model, engine.tokenizer, engine.info, fast=fast, prompt_cache=prompt_cache),
        client.dialect,
    )


def test_the_embedded_model_runs_packed_int4_weights_with_an_int8_head(embedded_client):
    fast = embedded_client.engine.fast
    assert fast is not None and (fast.weight_bits, fast.head_bits) == (4, 8)
    if has_compiler():  # the decode attention kernel is built (on an x86-64 with AVX2) and reads bf16 caches
        assert fast.decode_attention is not None and fast.new_cache(8).keys.dtype == torch.bfloat16
        assert fast.int8_head is not None


def test_the_int8_head_kernel_gives_the_torch_heads_logits(embedded_client):
    fast = embedded_client.engine.fast
    if fast.int8_head is None:
        pytest.skip("the int8 head kernel needs a C compiler")
    hidden = torch.randn(5, fast.embedding.shape[1], dtype=torch.bfloat16)
    torch_logits = fast.head(hidden).float()  # rounded to bf16: within 1/256 of the value
    torch.testing.assert_close(fast._head(hidden), torch_logits, rtol=1 / 128, atol=1e-2)


def assert_reference_choices(client: LocalClient, reference: LocalClient, fast: FastLlama) -> None:
    """Along the reference's greedy reply, `fast` picks its token wherever the lead is clear (quality.py)."""
    model = client.engine.model
    fast_client = with_fast(client, fast)
    stop_ids = set(client.dialect.stop_token_ids())
    for prompt in PROMPTS:
        ids = client.dialect.encode([Message.user(prompt)])
        params = GenerationParams(temperature=0.0, max_new_tokens=32)
        greedy = list(reference.engine.generate(ids, params, stop_ids))
        expected = reference_logits(model, ids, greedy)
        assert clear_disagreements(expected, decoder_logits(fast_client.engine.decoder, ids, greedy)) == 0, prompt


@pytest.mark.parametrize("dense", [torch.bfloat16, torch.float32])  # prompts' matmuls: packed.dense_dtype
@pytest.mark.parametrize("bits", [16, 4])
def test_fast_path_makes_the_reference_greedy_choices_on_a_prompt_set(embedded_client, reference, bits, dense):
    model = embedded_client.engine.model
    fast = FastLlama(model, weight_bits=bits, head_bits=8 if bits == 4 else 16, dense=dense)
    assert_reference_choices(embedded_client, reference, fast)


def test_without_the_kernel_decode_steps_attend_with_torch_ops_and_choose_alike(embedded_client, reference):
    """Where the kernels cannot be built (no compiler, not x86): float32 caches, per-row bmm's, torch's int8 head."""
    fast = FastLlama(embedded_client.engine.model, native=False)
    assert fast.decode_attention is None and fast.int8_head is None and fast.new_cache(8).keys.dtype == torch.float32
    assert_reference_choices(embedded_client, reference, fast)


@pytest.mark.parametrize("bits", [16, 4])
def test_scripted_decode_layers_compute_the_eager_ops_results_bit_for_bit(embedded_client, bits):
    """A step whose rows all decode runs its layers as TorchScript functions (decode_layers.py)."""
    if not has_compiler():
        pytest.skip("the scripted layers run beside the decode attention kernel, which needs a C compiler")
    fast = FastLlama(embedded_client.engine.model, weight_bits=bits, head_bits=8 if bits == 4 else 16)
    assert fast.scripted is not None
    caches = [fast.new_cache(400) for _ in range(3)]
    for cache, length in zip(caches, (5, 40, 300), strict=True):
        fast.forward([Row(cache, list(range(100, 100 + length)))])

    def step() -> torch.Tensor:
        logits = fast.forward([Row(cache, [7]) for cache in caches])
        for cache in caches:
            cache.truncate(cache.length - 1)
        return logits

    scripted = step()
    fast.scripted = None
    assert torch.equal(scripted, step())


def test_steps_give_the_same_logits_on_one_thread_as_on_two(embedded_client):
    """The decode thread changes its thread count with the load (thread_tuner.py): no reply may change with it."""
    fast = embedded_client.engine.fast
    results: dict[int, list[torch.Tensor]] = {}

    def run(threads: int) -> None:  # a thread's torch thread count is its own
        torch.set_num_threads(threads)
        caches = [fast.new_cache(200) for _ in range(3)]
        logits = [fast.forward([Row(cache, list(range(100, 140 + 5 * i)))]) for i, cache in enumerate(caches)]
        logits += [fast.forward([Row(cache, [token]) for cache in caches]) for token in (7, 8, 9)]
        for cache in caches:
            cache.release()
        results[threads] = logits

    cores = torch.get_num_threads()
    for threads in (1, 2):
        worker = threading.Thread(target=run, args=(threads,))
        worker.start()
        worker.join()
    torch.set_num_threads(cores)  # what later threads start from
    assert len(results[1]) == 6 and all(torch.equal(a, b) for a, b in zip(results[1], results[2], strict=True))


def test_int4_weights_keep_perplexity_within_two_percent(embedded_client):
    engine = embedded_client.engine
    ids = engine.tokenizer(QUALITY_TEXT)["input_ids"]
    packed = perplexity(decoder_logits(engine.decoder, ids[:1], ids[1:]), ids[1:])
    base = perplexity(reference_logits(engine.model, ids[:1], ids[1:]), ids[1:])
    assert packed <= base * (1 + PERPLEXITY_TOLERANCE), (packed, base)


def test_prompt_cache_reuses_the_previous_turn(embedded_client):
    engine = embedded_client.engine
    cached = with_fast(embedded_client, engine.fast)
    uncached = with_fast(embedded_client, engine.fast, PromptCache(max_entries=0, max_bytes=0))
    conversation: list[Message] = []
    for turn in ["Hi! Can you help me plan a garden?", "Which vegetables grow in shade?", "And herbs?"]:
        conversation.append(Message.user(turn))
        text = reply(cached, conversation)
        assert text.strip()
        conversation.append(Message.assistant(text))
    reply(uncached, conversation[:3])
    assert cached.engine.prompt_cache.reused_tokens > 100  # turns 2 and 3 started from turn 1's cache
    assert uncached.engine.prompt_cache.reused_tokens == 0


def test_a_reply_the_next_prompt_spells_otherwise_is_not_prefilled_again(embedded_client):
    """The model wrote " ec"+"olor" and "\\n\\n" as one id; the next prompt re-tokenizes them as " e"+"color", "\\n"+"\\n"."""
    engine, dialect = embedded_client.engine, embedded_client.dialect
    ask = Message.user("Plot the points in black.")
    prompt = dialect.encode([ask])
    written = engine.tokenizer.convert_tokens_to_ids(
        ["plt", ".", "scatter", "(", "x", ",", "Ġec", "olor", "='", "black", "')", "ĊĊ", "Done"]
    )
    next_prompt = dialect.encode([ask, Message.assistant(engine.tokenizer.decode(written)), Message.user("Thanks!")])
    assert next_prompt[: len(prompt) + 6] == prompt + written[:6] and next_prompt[len(prompt) + 6] != written[6]
    engine.prompt_cache.clear()
    once = GenerationParams(temperature=0.0, max_new_tokens=1)
    list(engine.generate(prompt + written, once, set()))  # kept: the prompt and the reply as written
    before = engine.prompt_cache.reused_tokens
    list(engine.generate(next_prompt, once, set()))
    assert engine.prompt_cache.reused_tokens - before == len(prompt) + len(written)


def test_a_prompt_shares_the_start_of_a_sequence_still_decoding(embedded_client):
    """Users who start at once with one long system prompt (Tool mode's schemas) prefill it once."""
    engine, dialect = embedded_client.engine, embedded_client.dialect
    system = Message.system("You are a careful assistant who answers in full sentences. " * 8)
    story = dialect.encode([system, Message.user("Tell me a long story about a cat.")])
    question = dialect.encode([system, Message.user("What is two plus two?")])
    shared = shared_prefix(story, question)
    assert shared > 64
    params = GenerationParams(temperature=0.0, max_new_tokens=400, repetition_penalty=1.0)
    engine.prompt_cache.clear()
    alone = list(engine.generate(story, replace(params, max_new_tokens=30), set()))
    engine.prompt_cache.clear()
    running = engine.generate(story, params, set())  # no stop ids: it runs to 400 tokens
    told = [next(running)]  # its prompt is in its cache now
    before = engine.prompt_cache.reused_tokens
    list(engine.generate(question, GenerationParams(temperature=0.0, max_new_tokens=4), set()))
    assert engine.prompt_cache.reused_tokens - before == shared
    assert len(engine.prompt_cache) == 1  # the question's: the story is still running
    told += list(itertools.islice(running, 29))
    running.close()
    assert told == alone  # copying its start changed nothing for the sequence it came from


# A token decoded (packed int4 weights) rather than prefilled (dense bf16) moves the
# embedded model's logits by up to ~0.45 on a scale of ~30 (measured); a cache holding
# the wrong tokens is off by far more.
LOGIT_DRIFT = 1.0


def test_a_tokens_logits_barely_depend_on_how_its_sequence_was_cut(embedded_client):
    """So the prompt cache and chunked prefill keep the output (fast_llama.py); batching changes nothing at all."""
    fast = embedded_client.engine.fast
    ids = embedded_client.dialect.encode([Message.user("Hi! Can you help me plan a garden? " * 6)])

    def last_logits(cuts: list[int], cache=None):
        cache = cache or fast.new_cache(1024)
        for start, end in itertools.pairwise([0, *cuts, len(ids)]):
            logits = fast.forward([Row(cache, ids[start:end])])[0]
        return logits.float()

    whole = last_logits([])
    for cuts in ([40], [20, 30], list(range(50, len(ids)))):  # the last: one token at a time from 50 on
        logits = last_logits(cuts)
        assert (logits - whole).abs().max() < LOGIT_DRIFT and logits.argmax() == whole.argmax(), cuts
    # what the prompt cache does with a kept sequence: drop its tail, feed the new tokens
    kept = fast.new_cache(1024)
    fast.forward([Row(kept, [*ids[:50], 7, 8, 9, 10])])
    kept.truncate(50)
    truncated = fast.forward([Row(kept, ids[50:])])[0].float()
    assert (truncated - whole).abs().max() < LOGIT_DRIFT and truncated.argmax() == whole.argmax()
    assert (last_logits([], None) - last_logits([])).abs().max() == 0  # deterministic
    shorter = fast.new_cache(1024)
    assert (fast.forward([Row(shorter, ids[:20])])[0].float() - whole).abs().max() > 3 * LOGIT_DRIFT

    # a decode step computes the same beside other sessions' rows as alone
    alone_cache, mine, other = fast.new_cache(1024), fast.new_cache(1024), fast.new_cache(1024)
    for cache in (alone_cache, mine):
        fast.forward([Row(cache, ids[:-1])])
    fast.forward([Row(other, ids[:30])])
    alone = fast.forward([Row(alone_cache, ids[-1:])])[0]
    prompt = list(range(100, 120))
    prefilled_alone = fast.forward([Row(fast.new_cache(64), prompt)])[0]
    batched = fast.forward([Row(other, [7]), Row(mine, ids[-1:]), Row(fast.new_cache(64), prompt)])
    assert torch.equal(alone, batched[1])
    assert (batched[2] - prefilled_alone).abs().max() < LOGIT_DRIFT  # a prompt beside decode steps


def test_a_prompt_longer_than_a_prefill_chunk_gives_the_whole_prompt_output(embedded_client):
    messages = [
        Message.user("Here are my notes: " + "the quick brown fox jumps over the lazy dog. " * 60 + "Summarise.")
    ]
    ids = embedded_client.dialect.encode(messages)
    assert len(ids) > PREFILL_CHUNK
    fast = embedded_client.engine.fast
    cache = fast.new_cache(2048)
    expected = [int(fast.forward([Row(cache, ids)])[0].argmax())]
    for _ in range(11):
        expected.append(int(fast.forward([Row(cache, expected[-1:])])[0].argmax()))
    params = GenerationParams(temperature=0.0, max_new_tokens=12, repetition_penalty=1.0)
    assert list(embedded_client.engine.generate(ids, params, set())) == expected


def test_four_concurrent_chats_are_batched_and_match_sequential_runs(embedded_client):
    engine = embedded_client.engine
    prompts = [[Message.user(f"Tell me a story about a {animal}.")] for animal in ("cat", "dog", "fox", "owl")]
    engine.prompt_cache.clear()
    expected = [reply(embedded_client, messages) for messages in prompts]
    engine.prompt_cache.clear()
    engine.decoder.batch_sizes.clear()
    results: dict[int, str] = {}

    def worker(index: int) -> None:
        results[index] = reply(embedded_client, prompts[index])

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert [results[index] for index in range(4)] == expected
    assert max(engine.decoder.batch_sizes) > 1


EXIT_MID_REPLY = """
import os, sys
from glm_client import Message, Settings, TextDelta, load_client
env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL")}
client = load_client(Settings.from_env({**env, "ENGINE": sys.argv[1]}))
stream = client.stream([Message.user("Tell me a long story.")], temperature=0.0, max_new_tokens=400)
for event in stream:
    if isinstance(event, TextDelta):
        print("first token", flush=True)
        break
"""


@pytest.mark.parametrize("engine", ["transformers", "llamacpp"])
def test_a_process_that_exits_mid_reply_exits_cleanly(engine):
    """The decode thread is still busy at exit; it used to abort the interpreter ("terminate called …")."""
    if engine == "llamacpp":
        pytest.importorskip("llama_cpp")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", EXIT_MID_REPLY, engine], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout) == (0, "first token\n"), result.stderr[-2000:]
