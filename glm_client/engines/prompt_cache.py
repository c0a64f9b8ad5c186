"""Recently used KV caches, found again by the token ids they hold.

A chat's next turn sends the whole history again; its prompt starts with the ids of
the previous prompt and reply. Keeping the finished sequence's cache lets the engine
prefill only what is new, so a turn's time to first token stays flat as the chat
grows (bench/bench_engine.py prints turn 1 vs turn 10).

A cache is taken out while a sequence uses it and put back when it ends, so two
sessions never write to one cache. A prompt that shares only the start of a cache (another
conversation with the same system prompt and tools, a regenerated reply) gets a copy of
that start, and the cache stays for the conversation it holds: taking it away made that
conversation prefill its whole history again at its next turn (two chats with one 321-token
system prompt taking turns: 354 tokens prefilled over their next two turns instead of 75,
bench/bench_engine.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

# A shorter shared prefix is not worth a copy.
MIN_SHARED_PREFIX = 32


class Cache(Protocol):
    length: int
    copyable: bool  # whether copy_prefix makes copies (not llama.cpp's: a sequence is one of few slots)

    def truncate(self, length: int) -> None: ...

    def release(self) -> None: ...

    def nbytes(self) -> int: ...

    def copy_prefix(self, length: int) -> Cache | None:
        """A new cache holding this one's first `length` ids, or None where caches cannot be copied."""
        ...


def _same_spelling(ids: list[int], held: list[int], start: int, pieces: Sequence[str | None]) -> tuple[int, int] | None:
    """The longest (i, j) past `start` where ids[start:i] and held[start:j] spell the same text; None if none."""
    i = j = start
    ahead = ""  # text one side has spelled past the other
    ids_ahead = False
    found = None
    while True:
        from_ids = not ahead or not ids_ahead  # the side behind spells next
        sequence, index = (ids, i) if from_ids else (held, j)
        if index == len(sequence) or (piece := pieces[sequence[index]]) is None:
            return found
        i, j = (i + 1, j) if from_ids else (i, j + 1)
        if not ahead:
            ahead, ids_ahead = piece, from_ids
        elif piece.startswith(ahead):  # the side behind draws level or overtakes
            ahead, ids_ahead = piece[len(ahead) :], from_ids
        elif ahead.startswith(piece):
            ahead = ahead[len(piece) :]
        else:
            return found
        if not ahead:
            found = (i, j)


def shared_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


class PromptCache:
    """At most `max_entries` caches holding at most `max_bytes` together; the least recently used goes first."""

    def __init__(self, max_entries: int, max_bytes: int, replay: int = 1) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # The last `replay` ids of a prompt always run again (at least one: its logits pick the next
        # token). An engine whose prompt chunks compute differently from single tokens replays a whole
        # chunk, so the same prompt gives the same logits, cached or not (a seeded reply repeats).
        self.replay = max(1, replay)
        self._entries: list[tuple[list[int], Cache]] = []  # most recent last
        self.reused_tokens = 0  # prompt tokens not prefilled thanks to the cache, for tests and the bench
        self._lock = threading.Lock()

    def take(self, ids: list[int], in_use: Iterable[tuple[list[int], Cache]] = ()) -> tuple[Cache | None, int]:
        """A cache for `ids`, from the one sharing the longest prefix with them, and how many ids it can reuse.

        A cache whose ids all start `ids` is taken out of the store; one that holds more (another
        conversation's) stays, and a copy of the shared start is returned. `in_use` are the
        (ids, cache) of sequences decoding now: never taken, only copied, so users who start
        at once with one long system prompt prefill it once. The last `replay` ids are always
        left to run.
        """
        with self._lock:
            best, best_length = -1, 0
            for index, (held, _cache) in enumerate(self._entries):
                length = shared_prefix(held, ids)
                if length > best_length:
                    best, best_length = index, length
            shared_in_use, running = 0, None
            for held, cache in in_use:
                if (length := shared_prefix(held, ids)) > shared_in_use:
                    shared_in_use, running = length, cache
            if running is not None and shared_in_use > best_length and self._worth(shared_in_use, ids):
                copy = running.copy_prefix(self._reuse(shared_in_use, ids))
                if copy is not None:  # one that cannot be copied (llama.cpp's) is not shared while in use
                    self.reused_tokens += copy.length
                    return copy, copy.length
            reuse = self._reuse(best_length, ids)
            if best < 0 or not self._worth(best_length, ids):
                return None, 0
            held, cache = self._entries[best]
            copy = cache.copy_prefix(reuse) if best_length < len(held) else None
            if copy is None:
                del self._entries[best]
            self.reused_tokens += reuse
        if copy is not None:
            return copy, reuse
        cache.truncate(reuse)
        return cache, reuse

    def _reuse(self, shared: int, ids: list[int]) -> int:
        return min(shared, len(ids) - self.replay)

    def _worth(self, shared: int, ids: list[int]) -> bool:
        return self._reuse(shared, ids) > 0 and shared >= min(MIN_SHARED_PREFIX, len(ids) - 1)

    def align(
        self, ids: list[int], pieces: Sequence[str | None], same_text: Callable[[list[int], list[int]], bool]
    ) -> list[int]:
        """`ids`, with a kept sequence's own ids where the two spell the same text differently.

        A reply's ids are the ones the model chose; the next turn's prompt holds the reply's
        text tokenized again, which can split it otherwise (" ec"+"olor" written, " e"+"color"
        re-tokenized, "\n\n" as one id or two). The cache then matched only up to there, and
        the rest of the reply was prefilled again. Here the prompt takes the kept ids for as
        long as both spell the same text, so the model reads its own ids for its own words.
        `pieces[id]` is an id's text in the tokenizer's own alphabet (None for special ids,
        which are never crossed); `same_text(a, b)` confirms with the tokenizer's decoding.
        """
        with self._lock:
            entries = [held for held, _cache in self._entries]
        best_ids, best_reuse = ids, 0
        for held in entries:
            shared = shared_prefix(held, ids)
            if shared < MIN_SHARED_PREFIX or shared >= min(len(held), len(ids)):
                continue  # no shared start, or nothing after it to align
            spelled = _same_spelling(ids, held, shared, pieces)
            if spelled is not None and spelled[1] > best_reuse:
                best_ids, best_reuse = held[: spelled[1]] + ids[spelled[0] :], spelled[1]
        if best_reuse and not same_text(best_ids, ids):
            return ids
        return best_ids

    def put(self, ids: list[int], cache: Cache) -> None:
        """Keep `cache`, which holds exactly `ids`, evicting the oldest entries beyond the limits."""
        evicted = []
        with self._lock:
            self._entries.append((list(ids), cache))
            while self._entries and (
                len(self._entries) > self.max_entries or sum(c.nbytes() for _, c in self._entries) > self.max_bytes
            ):
                evicted.append(self._entries.pop(0)[1])
        for old in evicted:
            old.release()

    def evict_oldest(self) -> bool:
        """Release the least recently used cache; False when there is none."""
        with self._lock:
            if not self._entries:
                return False
            _ids, cache = self._entries.pop(0)
        cache.release()
        return True

    def clear(self) -> None:
        with self._lock:
            entries, self._entries = self._entries, []
        for _ids, cache in entries:
            cache.release()

    def __len__(self) -> int:
        return len(self._entries)
