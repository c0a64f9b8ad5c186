"""Notice a reply that loops: one short block of tokens written again and again.

Small models fall into such loops (" * 1j" a hundred times, "import random" on every line)
and would write them until `max_new_tokens`. With several users on one decode batch, those
tokens slow everyone's replies and hold the looping turn for minutes.
"""

from __future__ import annotations

from collections import deque

MAX_PERIOD = 16  # the longest block counted as a loop: a line of code or a short phrase


class LoopGuard:
    """Fed a reply's token ids one by one; says when its last `min_tokens` ids repeat one block.

    For each block length p up to MAX_PERIOD it counts how many of the latest ids equal the
    id p places before them, so each id costs MAX_PERIOD comparisons however long the reply.
    A loop holds at least two whole blocks; `min_tokens` 0 never reports one.
    """

    def __init__(self, min_tokens: int) -> None:
        self.min_tokens = min_tokens
        self._latest: deque[int] = deque(maxlen=MAX_PERIOD)
        self._matches = [0] * (MAX_PERIOD + 1)  # [p]: the latest ids in a row equal to the id p before

    def feed(self, token: int) -> bool:
        """Take the next id; True when it ends a loop of at least `min_tokens` ids."""
        if not self.min_tokens:
            return False
        looping = False
        for period in range(1, len(self._latest) + 1):
            if self._latest[-period] == token:
                matches = self._matches[period] = self._matches[period] + 1
                looping = looping or (matches >= period and matches + period >= self.min_tokens)
            else:
                self._matches[period] = 0
        self._latest.append(token)
        return looping
