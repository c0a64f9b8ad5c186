"""How often streaming text is redrawn: per stream, and shared by all the streams of the app.

Each redraw sanitises and sends the whole reply so far, and the browser re-renders it.
With many users streaming at once on a small machine, those redraws take cores the model
decodes on. In load runs of 8 users with the browsers beside the app (bench/bench_load.py,
README "Reliability"), redrawing each stream 2 times a second instead of 4 took the
browsers' renderers from 0.53 to 0.39 of a core; with this budget the model wrote 47-51
tokens a second for all users together, against 45-46 the same hour without it. So the
streams share a budget: together at most MAX_REDRAWS_PER_S, each at most every
MIN_REDRAW_S: up to 4 streams at once still redraw 4 times a second each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

MIN_REDRAW_S = 0.25  # four redraws a second still read as live text
MAX_REDRAWS_PER_S = 16.0  # all streams together: 8 at once redraw every 0.5 s each
DRAWING_S = 2.0  # a stream that drew this recently counts as drawing


class RedrawBudget:
    """Spreads MAX_REDRAWS_PER_S over the streams that drew in the last DRAWING_S."""

    def __init__(self) -> None:
        self._last_draw: dict[int, float] = {}  # id of a stream -> when it last drew
        self._lock = threading.Lock()  # every session's script thread draws

    def interval_s(self, stream: object, now: float) -> float:
        """Records that `stream` draws now; the time it waits before its next redraw."""
        with self._lock:
            self._last_draw[id(stream)] = now
            self._last_draw = {key: last for key, last in self._last_draw.items() if now - last < DRAWING_S}
            drawing = len(self._last_draw)
        return max(MIN_REDRAW_S, drawing / MAX_REDRAWS_PER_S)


REDRAWS = RedrawBudget()  # one per process: the app's cores are what the streams share


class Throttled:
    """Calls `draw` with the latest value within the redraw budget, and never more than a third of the time."""

    def __init__(self, draw: Callable[[Any], None], budget: RedrawBudget | None = None) -> None:
        self.draw = draw
        self.budget = budget if budget is not None else REDRAWS
        self.next_draw = 0.0  # the first value draws at once

    def __call__(self, value: Any) -> None:
        started = time.monotonic()
        if started < self.next_draw:
            return
        self.draw(value)
        # Sanitising a long reply full of links costs ~10 ms a KB: redraws never take more than a third of the time.
        self.next_draw = started + max(self.budget.interval_s(self, started), 2 * (time.monotonic() - started))
