"""The engine's parts without a model: packed weights, the prompt cache, the decode thread."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest
import torch

from glm_client.config import GenerationParams
from glm_client.engines import packed
from glm_client.engines.decoding import PREFILL_CHUNK, SequenceDecoder
from glm_client.engines.fast_llama import KVCache
from glm_client.engines.packed import PackedLinear, dense_dtype
from glm_client.engines.prompt_cache import MIN_SHARED_PREFIX, PromptCache, shared_prefix
from glm_client.engines.sampling import next_token, next_tokens, top_p_nuclei
from glm_client.engines.thread_tuner import ThreadTuner


class FakeCache:
    def __init__(self, length: int = 0, size: int = 1, copyable: bool = True) -> None:
        self.length = length
        self.size = size
        self.copyable = copyable  # False: as llama.cpp's sequences
        self.released = False

    def copy_prefix(self, length: int) -> FakeCache | None:
        return FakeCache(length, self.size) if self.copyable else None

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)

    def release(self) -> None:
        self.released = True

    def nbytes(self) -> int:
        return self.size


@pytest.mark.parametrize("bits", [4, 8])
def test_packed_weights_multiply_like_the_dense_weight(bits):
    torch.manual_seed(0)
    weight = (torch.randn(96, 64) * 0.02).to(torch.bfloat16)
    linear = PackedLinear(weight, None, bits)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    exact = x.float() @ weight.float().T
    error = (linear(x).float() - exact).norm() / exact.norm()
    assert error < (0.12 if bits == 4 else 0.02)


def test_int4_reproduces_weights_that_are_already_on_its_grid():
    """Weights de-quantized from Q4_1 (the embedded GGUF) come back up to bf16 rounding."""
    torch.manual_seed(1)
    levels = torch.randint(0, 16, (64, 64)).float()
    levels[:, ::32] = 0  # every 32-wide group spans the full range, as Q4_1's own quantizer makes it
    levels[:, 1::32] = 15
    scale = torch.rand(64, 2).repeat_interleave(32, dim=1) * 0.01 + 0.001
    weight = (levels * scale - 8 * scale).to(torch.bfloat16)
    linear = PackedLinear(weight, None, 4)
    x = torch.eye(64, dtype=torch.bfloat16)[:4]  # few rows: the packed kernel
    error = (linear(x).float() - weight[:, :4].T.float()).abs()
    assert (error <= 0.1 * scale[:, :4].T).all()  # a tenth of a step: bf16 rounding of scale and offset


@pytest.mark.parametrize("bits", [16, 4])
def test_dense_rows_on_a_float32_copy_give_the_bf16_result_in_bf16(bits):
    torch.manual_seed(3)
    weight = (torch.randn(96, 64) * 0.02).to(torch.bfloat16)
    bias = torch.randn(96, dtype=torch.bfloat16)
    on_bf16, on_float32 = PackedLinear(weight, bias, bits), PackedLinear(weight, bias, bits, torch.float32)
    assert (on_float32.dense_weight.dtype, on_bf16.dense_weight.dtype) == (torch.float32, torch.bfloat16)
    assert on_float32.packed_nbytes() - on_bf16.packed_nbytes() == weight.numel() * 4  # the copy is counted
    x = torch.randn(40, 64, dtype=torch.bfloat16)
    y = on_float32.dense(x)
    assert y.dtype == torch.bfloat16
    exact = x.float() @ weight.float().T + bias.float()
    assert (y.float() - exact).abs().max() <= (on_bf16.dense(x).float() - exact).abs().max() + 0.02


def test_prompts_run_on_float32_where_this_cpu_is_slow_at_bf16(monkeypatch):
    small, large = 135_000_000, packed.DENSE_COPY_MAX_BYTES  # parameters: the embedded model's, a 4x-too-large copy
    monkeypatch.setattr(packed, "bf16_matmul_slowdown", lambda: 8.0)  # an AVX2 CPU without AVX512-BF16
    assert dense_dtype(torch.bfloat16, small) == torch.float32
    assert dense_dtype(torch.bfloat16, large) == torch.bfloat16  # the copy would cost too much memory
    assert dense_dtype(torch.float16, small) == torch.float16
    monkeypatch.setattr(packed, "bf16_matmul_slowdown", lambda: 1.0)  # a CPU with bf16 instructions
    assert dense_dtype(torch.bfloat16, small) == torch.bfloat16


@pytest.mark.parametrize("bits", [4, 8])
def test_a_packed_row_is_the_same_whatever_the_number_of_rows(bits):
    """What lets one kernel serve prefill and decode without changing any token's result."""
    torch.manual_seed(2)
    linear = PackedLinear((torch.randn(96, 1536) * 0.02).to(torch.bfloat16), None, bits)
    x = torch.randn(40, 1536, dtype=torch.bfloat16)
    assert torch.equal(linear(x), torch.cat([linear(x[i : i + 1]) for i in range(40)]))


def test_shared_prefix():
    assert shared_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert shared_prefix([], [1]) == 0
    assert shared_prefix([5, 6], [5, 6, 7]) == 2


def test_prompt_cache_hands_out_the_longest_match_once():
    cache = PromptCache(max_entries=4, max_bytes=100)
    base = list(range(100))
    short, long = FakeCache(60), FakeCache(90)
    cache.put(base[:60], short)
    cache.put(base[:90], long)
    found, reused = cache.take([*base[:95], 7])
    assert found is long and reused == 90
    found, reused = cache.take([*base[:95], 7])  # taken: the other one now
    assert found is short and reused == 60
    assert cache.take(base) == (None, 0)


def test_prompt_cache_leaves_one_token_to_run_and_truncates():
    cache = PromptCache(max_entries=4, max_bytes=100)
    held = FakeCache(80)
    cache.put(list(range(80)), held)
    found, reused = cache.take(list(range(80)))  # the same prompt again (a seeded reply repeated)
    assert found is held and reused == 79 and held.length == 79


def test_a_prompt_sharing_only_the_start_of_a_cache_gets_a_copy_and_the_cache_stays():
    """Another conversation with the same system prompt must not take this one's history away."""
    cache = PromptCache(max_entries=4, max_bytes=100)
    conversation = FakeCache(80)
    cache.put(list(range(80)), conversation)
    found, reused = cache.take([*range(50), -1])
    assert found is not None and found is not conversation and (found.length, reused) == (50, 50)
    assert conversation.length == 80 and not conversation.released
    assert cache.take([*range(80), -1]) == (conversation, 80)  # its own next turn finds it whole


def test_a_kv_cache_copy_holds_the_same_prefix_and_is_its_own():
    original = KVCache(layers=2, kv_heads=3, head_dim=4, dtype=torch.float32, limit=1000)
    original.reserve(300)
    original.keys[:, :, :300] = torch.randn(2, 3, 300, 4)
    original.values[:, :, :300] = torch.randn(2, 3, 300, 4)
    original.length = 300
    copy = original.copy_prefix(260)
    assert copy.length == 260 and copy.keys.shape[2] >= 260
    assert torch.equal(copy.keys[:, :, :260], original.keys[:, :, :260])
    assert torch.equal(copy.values[:, :, :260], original.values[:, :, :260])
    copy.keys[:, :, :260] = 0  # the next turn of the copy's sequence writes into it
    assert original.keys[:, :, :260].abs().sum() > 0


def test_a_cache_that_cannot_be_copied_is_taken_even_for_a_shared_start():
    cache = PromptCache(max_entries=4, max_bytes=100)
    slot = FakeCache(80, copyable=False)
    cache.put(list(range(80)), slot)
    assert cache.take([*range(50), -1]) == (slot, 50)
    assert slot.length == 50 and len(cache) == 0


def test_prompt_cache_replays_the_last_ids_it_is_told_to():
    cache = PromptCache(max_entries=4, max_bytes=100, replay=8)
    held = FakeCache(80)
    cache.put(list(range(80)), held)
    assert cache.take(list(range(8))) == (None, 0)  # nothing left to reuse: the entry stays
    found, reused = cache.take([*range(80), 7])
    assert found is held and reused == 73 and held.length == 73


def test_a_prompt_shares_the_start_of_a_sequence_still_decoding_by_copy():
    """Users who start at once with one long system prompt prefill it once."""
    cache = PromptCache(max_entries=4, max_bytes=100)
    entry, running = FakeCache(40), FakeCache(90)
    cache.put(list(range(40)), entry)
    found, reused = cache.take([*range(80), -1], in_use=[(list(range(90)), running)])
    assert found is not None and found is not running and (found.length, reused) == (80, 80)
    assert running.length == 90 and not running.released and len(cache) == 1  # neither was taken
    assert cache.reused_tokens == 80


def test_a_kept_cache_sharing_as_much_as_a_running_one_is_taken_without_a_copy():
    cache = PromptCache(max_entries=4, max_bytes=100)
    entry = FakeCache(80)
    cache.put(list(range(80)), entry)
    assert cache.take([*range(80), -1], in_use=[(list(range(90)), FakeCache(90))]) == (entry, 80)


def test_a_running_cache_that_cannot_be_copied_is_left_to_its_sequence():
    cache = PromptCache(max_entries=4, max_bytes=100)
    entry = FakeCache(40)
    cache.put(list(range(40)), entry)
    running = FakeCache(90, copyable=False)  # as llama.cpp's
    assert cache.take([*range(80), -1], in_use=[(list(range(90)), running)]) == (entry, 40)
    assert running.length == 90


# Ids 0-9 spell "0"-"9"; 10 is "ab", 11 "a", 12 "b", 13 "abc", 14 "c"; 15 is special.
PIECES: list[str | None] = [*"0123456789", "ab", "a", "b", "abc", "c", None]
START = [1, 2, 3] * 12  # a shared start longer than MIN_SHARED_PREFIX


def same_text(a: list[int], b: list[int]) -> bool:
    return "".join(map(str, (PIECES[i] for i in a))) == "".join(map(str, (PIECES[i] for i in b)))


def test_align_gives_a_prompt_the_kept_ids_where_both_spell_the_same_text():
    """A reply the model wrote as "ab"+"c" comes back in the next prompt as "a"+"b"+"c"."""
    cache = PromptCache(max_entries=4, max_bytes=100)
    cache.put([*START, 10, 14, 5], FakeCache(39))
    prompt = [*START, 11, 12, 14, 5, 7, 8]
    assert cache.align(prompt, PIECES, same_text) == [*START, 10, 14, 5, 7, 8]
    assert cache.align([*START, 11, 13, 6], PIECES, same_text) == [*START, 11, 13, 6]  # "aabc": another text
    # the same text as far as "ab", then not: the kept ids are taken as far as the texts agree
    assert cache.align([*START, 11, 12, 4], PIECES, same_text) == [*START, 10, 4]


def test_align_never_crosses_a_special_id_and_defers_to_the_tokenizers_decoding():
    cache = PromptCache(max_entries=4, max_bytes=100)
    cache.put([*START, 15, 10], FakeCache(38))
    assert cache.align([*START, 11, 12], PIECES, same_text) == [*START, 11, 12]
    cache.put([*START, 10, 14], FakeCache(38))
    prompt = [*START, 11, 12, 14]
    assert cache.align(prompt, PIECES, lambda a, b: False) == prompt
    assert cache.align(prompt, PIECES, same_text) == [*START, 10, 14]


def test_prompt_cache_ignores_a_short_shared_prefix():
    cache = PromptCache(max_entries=4, max_bytes=100)
    cache.put(list(range(200)), FakeCache(200))
    assert cache.take([*range(MIN_SHARED_PREFIX - 1), -1, *range(100)]) == (None, 0)
    assert len(cache) == 1


def test_prompt_cache_evicts_the_least_recent_beyond_its_limits():
    cache = PromptCache(max_entries=2, max_bytes=10)
    first, second, third = FakeCache(size=4), FakeCache(size=4), FakeCache(size=4)
    cache.put([1] * 40, first)
    cache.put([2] * 40, second)
    cache.put([3] * 40, third)
    assert first.released and not second.released and len(cache) == 2
    cache.put([4] * 40, FakeCache(size=9))  # over max_bytes: everything older goes
    assert second.released and third.released and len(cache) == 1
    assert cache.evict_oldest() and not cache.evict_oldest()


class CountingModel:
    """A fake StepModel whose next token is always the last id + 1; it records each forward's size."""

    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.fail = fail
        self.delay = delay

    def new_cache(self, limit: int) -> FakeCache:
        return FakeCache()

    def forward(self, rows) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("boom")
        time.sleep(self.delay)
        self.sizes.append(len(rows))
        logits = torch.zeros(len(rows), VOCAB)
        for index, row in enumerate(rows):
            row.cache.length += len(row.ids)
            logits[index, (row.ids[-1] + 1) % VOCAB] = 1.0
        return logits


VOCAB = 5000
COUNT = GenerationParams(temperature=0.0, max_new_tokens=5, repetition_penalty=1.0)


def decoder_for(model: CountingModel, prompt_cache: PromptCache | None = None) -> SequenceDecoder:
    return SequenceDecoder(model, 4096, prompt_cache if prompt_cache is not None else PromptCache(4, 1 << 20))


def test_decoder_yields_tokens_and_respects_limits_and_stop_ids():
    decoder = decoder_for(CountingModel())
    assert list(decoder.generate([1, 2, 3], COUNT, set())) == [4, 5, 6, 7, 8]
    assert list(decoder.generate([10], COUNT, {13})) == [11, 12]


def test_concurrent_sequences_share_forwards_and_each_gets_its_own_tokens():
    model = CountingModel(delay=0.01)
    decoder = decoder_for(model)
    results: dict[int, list[int]] = {}
    params = GenerationParams(temperature=0.0, max_new_tokens=20, repetition_penalty=1.0)

    def worker(start: int) -> None:
        results[start] = list(decoder.generate([start], params, set()))

    threads = [threading.Thread(target=worker, args=(start,)) for start in (100, 200, 300, 400)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {start: list(range(start + 1, start + 21)) for start in (100, 200, 300, 400)}
    assert max(model.sizes) == 4


def test_a_long_prompt_is_prefilled_in_chunks():
    model = CountingModel()
    decoder = decoder_for(model)
    prompt = list(range(PREFILL_CHUNK * 2 + 5))
    tokens = list(decoder.generate(prompt, COUNT, set()))
    assert tokens[0] == len(prompt)
    # three prompt chunks, then one forward per new token but the last (it is never fed)
    assert model.sizes == [1] * (3 + COUNT.max_new_tokens - 1)


def test_the_next_turn_reuses_the_cache_of_the_previous_one():
    prompt_cache = PromptCache(4, 1 << 20)
    decoder = decoder_for(CountingModel(), prompt_cache)
    prompt = list(range(100, 140))
    reply = list(decoder.generate(prompt, COUNT, set()))
    next_turn = [*prompt, *reply, 7, 8, 9]
    assert list(decoder.generate(next_turn, COUNT, set())) == [10, 11, 12, 13, 14]
    assert prompt_cache.reused_tokens == len(prompt) + len(reply) - 1  # the last reply token was never fed


class GatedModel(CountingModel):
    """A CountingModel whose forwards wait while `gate` is clear, saying when one is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.waiting = threading.Event(), threading.Event()
        self.gate.set()

    def forward(self, rows) -> torch.Tensor:
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(10)
        return super().forward(rows)


def send_next_round_mid_forward(
    decoder: SequenceDecoder, model: GatedModel, prompt: list[int], next_round
) -> list[int]:
    """Read 3 tokens of `prompt`'s reply, stop reading while the decode thread is inside a forward,
    and send `next_round(reply)` at once, as an agent does where the model's call closes; its tokens."""
    params = GenerationParams(temperature=0.0, max_new_tokens=500, repetition_penalty=1.0)
    stream = decoder.generate(prompt, params, set())
    reply = [next(stream) for _ in range(3)]
    model.gate.clear()
    assert model.waiting.wait(10)  # the decode thread is inside a forward
    stream.close()
    tokens: list[int] = []
    sender = threading.Thread(target=lambda: tokens.extend(decoder.generate(next_round(reply), COUNT, set())))
    sender.start()
    deadline = time.monotonic() + 10
    while not decoder._incoming and time.monotonic() < deadline:
        time.sleep(0.001)
    model.gate.set()
    sender.join(10)
    return tokens


def test_a_round_sent_as_its_reply_stops_reuses_that_replys_cache():
    """The decode thread is mid-forward then, so it sees the stop and the new prompt together; the
    stopped sequence's cache must be back in the prompt cache before the new one looks."""
    model, prompt_cache = GatedModel(), PromptCache(4, 1 << 20)
    prompt = list(range(100, 140))
    tokens = send_next_round_mid_forward(
        decoder_for(model, prompt_cache), model, prompt, lambda reply: [*prompt, *reply, 7]
    )
    assert tokens == [8, 9, 10, 11, 12]
    assert prompt_cache.reused_tokens == len(prompt) + 3


def test_a_round_sent_as_its_reply_stops_reads_the_reply_in_the_models_own_ids():
    """The next round spells the reply's text in other ids; they are respelled once that reply's
    cache is back (at admission, not as the request comes), so the whole reply is reused."""
    model, prompt_cache = GatedModel(), PromptCache(4, 1 << 20)
    decoder = SequenceDecoder(model, 4096, prompt_cache, respell=lambda ids: prompt_cache.align(ids, PIECES, same_text))
    prompt = [*START, 9]  # the model writes 10, 11, 12: "ab" "a" "b"
    tokens = send_next_round_mid_forward(decoder, model, prompt, lambda reply: [*prompt, 11, 12, 11, 12, 5])
    assert tokens == [6, 7, 8, 9, 10]
    assert prompt_cache.reused_tokens == len(prompt) + 3  # without respelling: len(prompt)


class UncopyableModel(GatedModel):
    """A GatedModel whose caches cannot be copied, as llama.cpp's sequences."""

    def new_cache(self, limit: int) -> FakeCache:
        return FakeCache(copyable=False)


def send_two_at_once(model: GatedModel, start: list[int]) -> tuple[dict[int, list[int]], PromptCache, int]:
    """Two prompts with one long start sent while the decode thread is inside a forward.

    Returns their tokens, the prompt cache, and the rows of the first forward after it.
    """
    prompt_cache = PromptCache(4, 1 << 20)
    decoder = decoder_for(model, prompt_cache)
    busy = decoder.generate([1], GenerationParams(temperature=0.0, max_new_tokens=500, repetition_penalty=1.0), set())
    next(busy)
    model.gate.clear()
    assert model.waiting.wait(10)  # the decode thread is inside a forward: both prompts arrive together
    results: dict[int, list[int]] = {}

    def send(last: int) -> None:
        results[last] = list(decoder.generate([*start, last], COUNT, set()))

    senders = [threading.Thread(target=send, args=(last,)) for last in (10, 20)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 10
    while len(decoder._incoming) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    gated = len(model.sizes)  # the waiting forward is recorded here once the gate opens
    model.gate.set()
    for sender in senders:
        sender.join(10)
    busy.close()
    return results, prompt_cache, model.sizes[gated + 1]


def test_prompts_sent_at_once_with_one_long_start_prefill_it_once():
    """The second waits until the first's start is in its cache, then copies it (Tool mode's schemas)."""
    start = list(range(1000, 1000 + PREFILL_CHUNK + 100))
    results, prompt_cache, rows = send_two_at_once(GatedModel(), start)
    assert results == {10: [11, 12, 13, 14, 15], 20: [21, 22, 23, 24, 25]}
    assert prompt_cache.reused_tokens == len(start)  # the second copied it from the first, still running
    assert rows == 2  # the running one and the first prompt's chunk: the second waited


def test_a_prompt_does_not_wait_for_a_start_it_could_not_copy():
    """llama.cpp's caches cannot be copied: waiting for one would gain nothing, so both prefill at once."""
    start = list(range(1000, 1000 + PREFILL_CHUNK + 100))
    results, prompt_cache, rows = send_two_at_once(UncopyableModel(), start)
    assert results == {10: [11, 12, 13, 14, 15], 20: [21, 22, 23, 24, 25]}
    assert prompt_cache.reused_tokens == 0
    assert rows == 3  # the running one and both prompts' chunks


def test_a_failed_forward_reaches_the_caller():
    decoder = decoder_for(CountingModel(fail=True))
    with pytest.raises(RuntimeError, match="boom"):
        list(decoder.generate([1], COUNT, set()))


def test_cancel_and_close_stop_the_sequence():
    decoder = decoder_for(CountingModel(delay=0.005))
    cancel = threading.Event()
    params = GenerationParams(temperature=0.0, max_new_tokens=500, repetition_penalty=1.0)
    tokens = []
    for token in decoder.generate([1], params, set(), cancel):
        tokens.append(token)
        if len(tokens) == 3:
            cancel.set()
    assert tokens == [2, 3, 4]
    stream = decoder.generate([1], params, set())
    next(stream)
    stream.close()
    time.sleep(0.1)
    assert not decoder._active  # the decode thread let it go


def test_close_ends_a_sequence_in_flight_and_refuses_new_ones():
    decoder = decoder_for(CountingModel(delay=0.005))
    params = GenerationParams(temperature=0.0, max_new_tokens=500, repetition_penalty=1.0)
    stream = decoder.generate([1], params, set())
    assert next(stream) == 2
    decoder.close()
    with pytest.raises(RuntimeError, match="shut down"):
        list(stream)
    assert decoder._thread is None
    with pytest.raises(RuntimeError, match="shut down"):
        list(decoder.generate([1], params, set()))


@pytest.mark.parametrize("flat", [False, True], ids=["candidates", "whole-vocabulary fallback"])
def test_top_p_keeps_the_tokens_transformers_keeps_in_every_row(flat):
    from transformers.generation.logits_process import TopPLogitsWarper

    generator = torch.Generator().manual_seed(5)
    scales = [3.0, 4.0, 1.0 if flat else 8.0]  # a flat row takes the whole batch to the fallback
    top_p = [0.5, 0.8, 0.95]
    scores = torch.stack([torch.randn(49152, generator=generator) * scale for scale in scales])
    values, ids, keep = top_p_nuclei(scores, top_p)
    for row, limit in enumerate(top_p):
        warped = TopPLogitsWarper(limit)(None, scores[row : row + 1].clone())[0]
        kept = ids[row, : keep[row]]
        assert set(kept.tolist()) == set(torch.nonzero(warped != float("-inf")).flatten().tolist())
        assert torch.equal(values[row, : keep[row]], scores[row, kept])
    assert values.shape[1] == (49152 if flat else 512)
    assert bool((values[:, :-1] >= values[:, 1:]).all())


def test_each_row_of_a_batch_picks_what_it_would_pick_alone():
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(6, 5000, generator=generator) * 3
    logits[:, 7] = 16.0  # every row's favourite, seen by the penalised rows only
    seen = [torch.tensor([7, 9]), torch.tensor([3]), torch.tensor([7]), torch.tensor([], dtype=torch.long)] * 2
    params = [
        GenerationParams(temperature=0.0, repetition_penalty=2.0),
        GenerationParams(temperature=0.0, repetition_penalty=2.0),
        GenerationParams(temperature=0.7, top_p=0.9, repetition_penalty=1.8, seed=1),
        GenerationParams(temperature=1.3, top_p=1.0, repetition_penalty=1.0, seed=2),
        GenerationParams(temperature=0.5, top_p=0.3, repetition_penalty=1.0, seed=3),
        GenerationParams(temperature=2.0, top_p=0.99, repetition_penalty=1.2, seed=4),
    ]

    numbers = random.Random(5)
    for _ in range(20):
        draws = [numbers.random() for _ in params]
        alone = [next_token(logits[row].clone(), seen[row], params[row], draws[row]) for row in range(6)]
        assert next_tokens(logits.clone(), seen[:6], params, draws) == alone
    assert alone[0] != 7 and alone[1] == 7  # the penalty reached only the row that saw the token


def test_top_p_sampling_is_seeded_and_stays_in_the_nucleus():
    logits = torch.randn(5000, generator=torch.Generator().manual_seed(3)) * 3
    params = GenerationParams(temperature=1.0, top_p=0.5, repetition_penalty=1.0)
    _, ids, keep = top_p_nuclei(logits[None].clone(), [0.5])
    nucleus = ids[0, : keep[0]]

    def draws(seed: int) -> list[int]:
        numbers = random.Random(seed)
        return [next_token(logits.clone(), torch.tensor([]), params, numbers.random()) for _ in range(200)]

    assert draws(1) == draws(1) and set(draws(1)) <= set(nucleus.tolist())
    assert len(set(draws(1))) > 1  # it samples, not picks


@pytest.mark.parametrize(("top_p", "expected"), [(1.0, [0.5, 0.3, 0.2]), (0.75, [0.625, 0.375, 0.0])])
def test_draws_follow_the_nucleus_probabilities_and_never_a_masked_token(top_p, expected):
    logits = torch.tensor([math.log(0.5), math.log(0.3), math.log(0.2), float("-inf"), float("-inf")])
    params = GenerationParams(temperature=1.0, top_p=top_p, repetition_penalty=1.0)
    none = torch.tensor([], dtype=torch.long)
    numbers = random.Random(0)
    tokens = [next_token(logits.clone(), none, params, numbers.random()) for _ in range(4000)]
    frequencies = [tokens.count(token) / len(tokens) for token in range(5)]
    assert frequencies == pytest.approx([*expected, 0.0, 0.0], abs=0.03)
    last = 2 if top_p == 1.0 else 1
    assert next_token(logits.clone(), none, params, 0.0) == 0
    assert next_token(logits.clone(), none, params, 1 - 1e-17) == last  # 1.0 in float32: still the last kept token


def test_a_failed_pick_reaches_its_caller_and_the_decoder_goes_on():
    class Refusing:
        def mask(self, logits):
            pass

        def accept(self, token):
            raise RuntimeError(f"Token {token} does not fit")

    decoder = decoder_for(CountingModel())
    with pytest.raises(RuntimeError, match="does not fit"):
        list(decoder.generate([1], COUNT, set(), constraint=Refusing()))
    assert list(decoder.generate([1, 2, 3], COUNT, set())) == [4, 5, 6, 7, 8]


class TimedSteps:
    """Drives a ThreadTuner through steps whose time depends on the thread count they ran on."""

    def __init__(self, tuner_args: dict, seconds: dict[int, float]) -> None:
        self.set_calls: list[int] = []
        self.tuner = ThreadTuner(**tuner_args, set_threads=self.set_calls.append)
        self.seconds = seconds
        self.ran_on: list[int] = []

    def run(self, shapes: list[tuple[int, int]]) -> None:
        for shape in shapes:
            self.tuner.start_step(shape)
            threads = self.set_calls[-1]  # what the step's thread is set to
            self.ran_on.append(threads)
            self.tuner.end_step(self.seconds[threads])


def test_the_thread_tuner_keeps_the_count_whose_steps_ran_faster():
    contended = TimedSteps({"cores": 2, "probe_every": 50, "probe_steps": 3}, {2: 0.080, 1: 0.069})
    contended.run([(8, 8)] * 100)
    assert contended.tuner.threads == 1
    assert contended.ran_on[:20] == [2] * 20  # the first probe comes after FIRST_PROBE steps...
    assert contended.ran_on[20:28] == [2] * 4 + [1] * 4  # ...a block on each count, their first steps untimed
    assert contended.ran_on[28:78] == [1] * 50  # then the faster count until the next probe, on 2 this time
    assert contended.ran_on[78:86] == [1] * 4 + [2] * 4 and contended.ran_on[86:] == [1] * 14

    free = TimedSteps({"cores": 2, "probe_every": 50, "probe_steps": 3}, {2: 0.040, 1: 0.070})
    free.run([(8, 8)] * 100)
    assert free.tuner.threads == 2 and free.ran_on.count(1) == 8  # two probes of 4 steps on 1 thread


def test_the_thread_tuner_switches_on_a_clear_gain_only():
    steps = TimedSteps({"cores": 2, "probe_every": 50, "probe_steps": 3}, {2: 0.080, 1: 0.078})
    steps.run([(8, 8)] * 100)
    assert steps.tuner.threads == 2  # 2.5% is noise under load


def test_the_thread_tuner_compares_steps_of_one_shape_only():
    steps = TimedSteps({"cores": 2, "probe_every": 50, "probe_steps": 3}, {2: 0.080, 1: 0.050})
    steps.run([(8, 8 + index % 3) for index in range(100)])  # prompt chunks come and go
    assert steps.tuner.threads == 2 and 1 not in steps.ran_on


def test_the_thread_tuner_tries_half_and_twice_its_count_in_turns():
    steps = TimedSteps({"cores": 16, "probe_every": 30, "probe_steps": 2}, {16: 0.05, 8: 0.04, 4: 0.06})
    steps.run([(8, 8)] * 100)
    assert steps.tuner.threads == 8 and set(steps.ran_on) == {16, 8, 4}  # 16 vs 8, then 8 vs 16, then 8 vs 4


def test_the_decode_thread_runs_its_forwards_on_the_tuners_count():
    class ThreadCounting(CountingModel):
        def __init__(self) -> None:
            super().__init__()
            self.threads: list[int] = []

        def forward(self, rows) -> torch.Tensor:
            self.threads.append(torch.get_num_threads())
            return super().forward(rows)

    cores = torch.get_num_threads()
    for tuner, threads in ((ThreadTuner(1), 1), (ThreadTuner(2, probe_every=0), 2)):
        model = ThreadCounting()
        decoder = SequenceDecoder(model, 4096, PromptCache(4, 1 << 20), tuner)
        assert list(decoder.generate([1, 2, 3], COUNT, set())) == [4, 5, 6, 7, 8]
        assert model.threads == [threads] * 5
        decoder.close()
    torch.set_num_threads(cores)  # what later threads start from
