"""The token loop of engines that keep one KV cache per sequence (the packed CPU path, llama.cpp).

One decode thread per engine runs every forward pass and every sampling step; a
caller's `generate` hands its request over and yields the tokens as they come back.
Why a thread of its own: torch runs its ops on a team of OpenMP threads that belongs
to the calling thread, and with more teams' threads than cores libgomp stops their
workers spinning between ops, so every op waits for them to wake. Forwards issued
from several threads took 2-3x as long here, so all torch work of an engine stays on
this one thread (and the model is loaded on a thread that ends: loader.in_passing_thread).

Each step of that thread is one forward over every active sequence: a decode step
(one token) for those generating, the next chunk of the prompt for those prefilling.
The weights are read once for all of them (concurrent chats decode in one batch),
every sequence advances every step (none is starved), and a long prompt is prefilled
in chunks between the others' steps. A new prompt starts from the cached KV of the
longest matching earlier sequence (prompt_cache.py), or a copy of a running one's, so a
chat's next turn prefills only what is new.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch

from glm_client.config import GenerationParams
from glm_client.engines.prompt_cache import MIN_SHARED_PREFIX, Cache, PromptCache, shared_prefix
from glm_client.engines.sampling import TokenPicker, pick_tokens
from glm_client.engines.thread_tuner import ThreadTuner

if TYPE_CHECKING:
    from glm_client.constrained import TokenConstraint

# Prompt tokens per sequence per step: bounds the attention's memory and how long the
# other sequences' next tokens wait behind a long prompt.
PREFILL_CHUNK = 512
# The decode thread ends after this long without work (a new request starts another).
IDLE_EXIT_S = 30.0


# The cache class of one StepModel (fast_llama.KVCache, llamacpp.LlamaSequence).
CacheT = TypeVar("CacheT", bound=Cache)


@dataclass(frozen=True)
class Row(Generic[CacheT]):
    """A slice of one forward: `ids` appended to the sequence held in `cache`."""

    cache: CacheT
    ids: list[int]


class StepModel(Protocol[CacheT]):
    """A model that appends ids to per-sequence caches and returns the next-token logits of each."""

    def new_cache(self, limit: int) -> CacheT: ...

    def forward(self, rows: list[Row[CacheT]]) -> torch.Tensor: ...


_END = object()  # the last item a sequence's queue receives


class _Sequence:
    """One request, as the decode thread sees it."""

    def __init__(
        self,
        input_ids: list[int],
        params: GenerationParams,
        stop_ids: set[int],
        cancel: threading.Event | None,
        constraint: TokenConstraint | None,
    ) -> None:
        self.pending = list(input_ids)  # ids to feed: the prompt, then each new token
        self.picking = (params, stop_ids, constraint)
        self.picker = TokenPicker(input_ids, params, stop_ids, constraint)
        self.cancel = cancel
        self.cache: Cache | None = None
        self.held: list[int] = []  # the ids the cache holds, to find it again next turn
        self.fed: list[int] = []  # ids of the forward in progress
        self.output: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.abandoned = False  # the caller stopped reading

    def stopped(self) -> bool:
        return self.abandoned or (self.cancel is not None and self.cancel.is_set())

    def respell(self, ids: list[int]) -> None:
        """Take `ids`, the same prompt in other ids (SequenceDecoder's `respell`), before any token is picked."""
        if ids != self.pending:
            self.pending = list(ids)
            self.picker = TokenPicker(ids, *self.picking)


class SequenceDecoder:
    """Prompt cache, batched steps and sampling around one `StepModel`, on one decode thread."""

    def __init__(
        self,
        model: StepModel[Any],  # the decoder only hands each model back the caches it made
        context_length: int,
        prompt_cache: PromptCache,
        tuner: ThreadTuner | None = None,
        respell: Callable[[list[int]], list[int]] | None = None,
    ) -> None:
        """`respell(ids)`: the prompt in the ids a kept cache holds for the same text (PromptCache.align)."""
        self.model = model
        self.context_length = context_length
        self.prompt_cache = prompt_cache
        self.tuner = tuner  # for a model whose ops run on torch's threads
        self.respell = respell
        self.batch_sizes: list[int] = []  # sequences per recent forward, for tests and the bench
        self._incoming: list[_Sequence] = []
        self._active: list[_Sequence] = []
        self._waiting: list[_Sequence] = []  # arrived, admitted once a running prompt's shared start is prefilled
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        _decoders.add(self)

    def generate(
        self,
        input_ids: list[int],
        params: GenerationParams,
        stop_ids: set[int],
        cancel: threading.Event | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[int]:
        """`Engine.generate` (base.py) of the engines that decode on this thread."""
        if not input_ids:
            raise ValueError("generation needs at least one prompt token")
        sequence = _Sequence(input_ids, params, stop_ids, cancel, constraint)
        with self._wake:
            if self._closed:
                raise RuntimeError("The engine has shut down.")
            self._incoming.append(sequence)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="glm-decode", daemon=True)
                self._thread.start()
            self._wake.notify()
        try:
            while True:
                item = sequence.output.get()
                if item is _END or sequence.stopped():
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            sequence.abandoned = True  # the decode thread lets it go at its next step

    def close(self, timeout: float = 10.0) -> None:
        """End every sequence and the decode thread; later `generate` calls raise."""
        with self._wake:
            self._closed = True
            thread = self._thread
            self._wake.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the decode thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._incoming and not self._active and not self._waiting and not self._closed:
                    self._wake.wait(IDLE_EXIT_S)
                    if not self._incoming and not self._closed:
                        self._thread = None
                        return
                if self._closed:
                    self._thread = None
                    ending, self._incoming = [*self._active, *self._waiting, *self._incoming], []
                    break
                arrived, self._incoming = self._incoming, []
            # Stopped sequences end first: their caches go back to the prompt cache, where the
            # request that follows one looks for it (an agent's next round, sent as soon as the
            # reply stopped at its call, before this thread saw the stop).
            for sequence in list(self._active):
                self._end_if_stopped(sequence)
            waiting, self._waiting = [*self._waiting, *arrived], []
            for sequence in waiting:
                if self._start_in_prefill(sequence):
                    self._waiting.append(sequence)  # until that start is in a cache it can copy
                else:
                    self._admit(sequence)
            if self._active:
                self._step()
        for sequence in ending:
            sequence.output.put(RuntimeError("The engine has shut down."))
            self._finish(sequence)

    def _start_in_prefill(self, sequence: _Sequence) -> bool:
        """Whether a running sequence is prefilling a long start of this one's prompt.

        Users who send prompts with one long start (Tool mode's schemas) at once would each
        prefill it. Waiting the step or two until it is in the first one's cache, to copy it
        from there (PromptCache.take's `in_use`), prefills it once; the wait costs the waiting
        prompt about one step, and the steps it waits through are the shorter without its
        chunks. A cache that cannot be copied (llama.cpp's) is not waited for.
        """
        for other in self._active:
            copyable = other.cache is not None and other.cache.copyable
            if copyable and len(other.pending) > 1:  # a decoding sequence's pending is its one new token
                shared = shared_prefix(other.held + other.pending, sequence.pending)
                if shared >= MIN_SHARED_PREFIX and shared - len(other.held) >= MIN_SHARED_PREFIX:
                    return True
        return False

    def _admit(self, sequence: _Sequence) -> None:
        if self.respell is not None:
            # Here, not as the request comes: an agent sends its next round as soon as the reply
            # stops at its call, and that reply's cache is back only once this thread has seen the
            # stop (_run). Respelled as it came, 1 prompt in 4 of a load run prefilled ~135 ids again.
            sequence.respell(self.respell(sequence.pending))
        running = [(other.held, other.cache) for other in self._active if other.cache is not None]
        cache, reused = self.prompt_cache.take(sequence.pending, in_use=running)
        if cache is None:
            try:
                cache = self.model.new_cache(self.context_length)
            except Exception as error:  # e.g. llama.cpp out of sequence slots
                sequence.output.put(error)
                return
        sequence.cache = cache
        sequence.held = sequence.pending[:reused]
        del sequence.pending[:reused]
        self._active.append(sequence)
        self._end_if_stopped(sequence)  # one already stopped, or whose prompt overruns the context

    def _end_if_stopped(self, sequence: _Sequence) -> None:
        """Finish a sequence its caller stopped reading, or one about to overrun its context."""
        assert sequence.cache is not None
        if sequence.stopped():
            self._finish(sequence)
        elif sequence.cache.length + min(len(sequence.pending), PREFILL_CHUNK) > self.context_length:
            sequence.output.put(ValueError(f"the sequence exceeds the {self.context_length}-token context"))
            self._finish(sequence)

    def _step(self) -> None:
        rows = []
        for sequence in self._active:
            assert sequence.cache is not None  # given in _admit
            sequence.fed = sequence.pending[:PREFILL_CHUNK]
            rows.append(Row(sequence.cache, sequence.fed))
        if self.tuner:
            self.tuner.start_step((len(rows), sum(len(row.ids) for row in rows)))
        started = time.perf_counter()
        try:
            logits = self.model.forward(rows)
        except Exception as error:  # every sequence of the step learns of it; their caches are unknown now
            for sequence in self._active:
                sequence.output.put(error)
                sequence.output.put(_END)
                sequence.cache.release()  # type: ignore[union-attr]
            self._active = []
            return
        if self.tuner:
            self.tuner.end_step(time.perf_counter() - started)
        del self.batch_sizes[:-1000]
        self.batch_sizes.append(len(rows))
        # float32 rows of our own, for sampling and constraints to change in place: one exact
        # conversion for the step (a conversion per row cost 6% of the decode thread under load)
        logits = logits.to(torch.float32, copy=True)
        for sequence in self._active:
            sequence.held += sequence.fed
            del sequence.pending[: len(sequence.fed)]
        # Sequences whose prompt is done pick their next tokens, all in one batch.
        choosing = [
            (index, sequence)
            for index, sequence in enumerate(list(self._active))
            if not sequence.pending and self._survives(sequence, sequence.picker.constrain, logits[index])
        ]
        if not choosing:
            return
        if len(choosing) < len(logits):  # some rows still prefill
            logits = logits[[index for index, _ in choosing]]
        chosen = pick_tokens([sequence.picker for _, sequence in choosing], logits)
        for (_, sequence), token in zip(choosing, chosen, strict=True):
            self._survives(sequence, self._take, sequence, token)

    def _survives(self, sequence: _Sequence, step: Callable[..., None], *args: Any) -> bool:
        """Run `step(*args)` for `sequence`; an error (e.g. a constraint refusing its token) ends it, not the thread."""
        try:
            step(*args)
        except Exception as error:
            sequence.output.put(error)
            self._finish(sequence)
            return False
        return True

    def _take(self, sequence: _Sequence, token: int) -> None:
        taken = sequence.picker.take(token)
        if taken is not None:
            sequence.output.put(taken)
            sequence.pending = [taken]
        if sequence.picker.finished:
            self._finish(sequence)

    def _finish(self, sequence: _Sequence) -> None:
        if sequence in self._active:
            self._active.remove(sequence)
        if sequence.cache is not None:  # kept before the caller hears the end: its next turn may want it
            self.prompt_cache.put(sequence.held, sequence.cache)
            sequence.cache = None
        sequence.output.put(_END)


# Decode threads still running at exit are ended first: a daemon thread in the middle of
# torch ops while the interpreter tears down aborted the process ("terminate called …").
_decoders: weakref.WeakSet[SequenceDecoder] = weakref.WeakSet()


@atexit.register
def _close_decoders() -> None:
    for decoder in list(_decoders):
        decoder.close()
