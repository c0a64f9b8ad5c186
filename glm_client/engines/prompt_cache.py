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
from typing import Protocol

# A shorter shared prefix is not worth a copy.
MIN_SHARED_PREFIX = 32


class Cache(Protocol):
    length: int

    def truncate(self, length: int) -> None: ...

    def release(self) -> None: ...

    def nbytes(self) -> int: ...

    def copy_prefix(self, length: int) -> Cache | None:
        """A new cache holding this one's first `length` ids, or None where caches cannot be copied."""
        ...


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

    def take(self, ids: list[int]) -> tuple[Cache | None, int]:
        """A cache for `ids`, from the one sharing the longest prefix with them, and how many ids it can reuse.

        A cache whose ids all start `ids` is taken out of the store; one that holds more (another
        conversation's) stays, and a copy of the shared start is returned. The last `replay` ids are
        always left to run.
        """
        with self._lock:
            best, best_length = -1, 0
            for index, (held, _cache) in enumerate(self._entries):
                length = shared_prefix(held, ids)
                if length > best_length:
                    best, best_length = index, length
            reuse = min(best_length, len(ids) - self.replay)
            if best < 0 or reuse <= 0 or best_length < min(MIN_SHARED_PREFIX, len(ids) - 1):
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
