"""Notice a reply that loops: one block of tokens written again and again.

Small models fall into such loops (" * 1j" a hundred times, the same `plt.scatter(...)` line
on and on) and would write them until `max_new_tokens`. With several users on one decode
batch, those tokens slow everyone's replies and hold the looping turn for minutes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

MAX_PERIOD = 64  # the longest block counted: a long line of code, or two short ones
MIN_BLOCKS = 3  # written this many times in a row; twice can be meant (a line copied to change it)
MIN_LOOP_TOKENS = 32  # the least `min_tokens` that makes sense: below it short echoes ("no, no, no") count


class LoopGuard:
    """Fed a reply's token ids one by one; says when its latest ids repeat one block.

    A loop is one block of at most MAX_PERIOD ids, MIN_BLOCKS times or more in a row, over at
    least `min_tokens` ids. For each block length p the guard counts how many of the latest ids
    equal the id p places before them, so each id costs MAX_PERIOD comparisons however long the
    reply. `min_tokens` 0 never reports a loop.
    """

    def __init__(self, min_tokens: int) -> None:
        self.min_tokens = min_tokens
        self._latest: deque[int] = deque(maxlen=MAX_PERIOD)
        self._matches = [0] * (MAX_PERIOD + 1)  # [p]: the latest ids in a row equal to the id p before

    def feed(self, token: int) -> bool:
        """Take the next id; True when it ends a loop."""
        if not self.min_tokens:
            return False
        looping = False
        for period in range(1, len(self._latest) + 1):
            if self._latest[-period] == token:
                matches = self._matches[period] = self._matches[period] + 1
                copies = matches // period  # whole copies of the block after its first writing
                looping = looping or (copies >= MIN_BLOCKS - 1 and matches + period >= self.min_tokens)
            else:
                self._matches[period] = 0
        self._latest.append(token)
        return looping


def loop_end(ids: Iterable[int], min_tokens: int) -> int | None:
    """How many of `ids` a reply holds where the guard stops it; None if it never does (bench_loops.py)."""
    guard = LoopGuard(min_tokens)
    return next((count for count, token in enumerate(ids, 1) if guard.feed(token)), None)
