"""How many threads the decode thread's torch ops use, chosen by timing steps.

On free cores every op splits well: 8 replies decode 1.65x faster on this machine's 2
threads than on 1. When other processes want the cores too (the users' browsers beside
the app in bench_load.py), each op waits for whichever of its threads the scheduler has
paused, and 2 threads lose that lead and more: with 0.75 of a core busy elsewhere, 8
replies of 300 tokens took 27.1 s on 2 threads and 22.9 s on 1 (bench/bench_threads.py).
No setting fits both, so the decode thread measures: every PROBE_EVERY steps it runs a
block of steps on its count, then a block on a neighbouring count (half or twice it),
all of one shape, and keeps whichever was faster. The counts give the same logits bit
for bit (test_engine_fast.py), so a switch changes no reply.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable

import torch

# Steps before the first probe, and between probes. A probe times PROBE_STEPS steps on each count;
# when the neighbour is the slow one (1 thread on free cores: 1.7x a step) that costs ~1% of the time.
FIRST_PROBE = 20
PROBE_EVERY = 400
PROBE_STEPS = 8
# The neighbour must beat the current count by this much: a switch on noise is undone only at the next probe.
MIN_GAIN = 0.05

Shape = tuple[int, int]  # (rows, tokens fed): steps of one shape take comparable time


class ThreadTuner:
    """Sets the calling thread's torch thread count before each step, from the probes' timings.

    `start_step(shape)` before a step and `end_step(seconds)` after it, on the thread
    that runs the steps (a torch thread count belongs to the thread that sets it).
    `probe_every=0` never probes: the steps stay on `cores` threads.
    """

    def __init__(
        self,
        cores: int | None = None,
        probe_every: int = PROBE_EVERY,
        probe_steps: int = PROBE_STEPS,
        set_threads: Callable[[int], None] = torch.set_num_threads,
    ) -> None:
        self.cores = cores or torch.get_num_threads()
        self.threads = self.cores  # the count steps run on outside probes
        self.probe_every = probe_every
        self.probe_steps = probe_steps
        self._set_threads = set_threads
        self._applied = (0, 0)  # (thread id, count) last set: a new decode thread starts from torch's default
        self._until_probe = min(FIRST_PROBE, probe_every)
        self._turn = 0  # which neighbour the next probe tries: fewer threads first
        self._probe: _Probe | None = None

    def start_step(self, shape: Shape) -> None:
        if self._probe is None:
            if self.probe_every and self._until_probe <= 0 and (neighbour := self._next_neighbour()):
                self._probe = _Probe(shape, self.threads, neighbour, self.probe_steps)
            self._until_probe -= 1
        elif shape != self._probe.shape:  # timings of another shape do not compare: begin again
            self._probe = _Probe(shape, self.threads, self._probe.neighbour, self.probe_steps)
        applied = (threading.get_ident(), self._probe.next_threads() if self._probe else self.threads)
        if applied != self._applied:
            self._set_threads(applied[1])
            self._applied = applied

    def end_step(self, seconds: float) -> None:
        probe = self._probe
        if probe is None:
            return
        probe.record(self._applied[1], seconds)
        if probe.done:
            # Means, not medians: the few steps a paused thread held back are the cost being measured.
            current, neighbour = (statistics.fmean(probe.times[n]) for n in (probe.current, probe.neighbour))
            if neighbour < (1 - MIN_GAIN) * current:
                self.threads = probe.neighbour
            self._probe, self._until_probe = None, self.probe_every

    def _next_neighbour(self) -> int:
        """Half or twice the current count, in turns; 0 where neither exists (one core)."""
        neighbours = [n for n in (max(1, self.threads // 2), min(self.cores, 2 * self.threads)) if n != self.threads]
        if not neighbours:
            return 0
        neighbour = neighbours[self._turn % len(neighbours)]
        self._turn += 1
        return neighbour


class _Probe:
    """A block of steps of one shape on the current count, then one on its neighbour, and their times.

    Blocks, not turns step by step: after a step on 2 threads the idle worker spins on for a while,
    and a 1-thread step beside it ran as slowly as a 2-thread one (78 against 79 ms under load),
    where a run of 1-thread steps was 15% faster. The first step of each block is not timed.
    """

    def __init__(self, shape: Shape, current: int, neighbour: int, steps: int) -> None:
        self.shape, self.current, self.neighbour, self.steps = shape, current, neighbour, steps
        self.times: dict[int, list[float]] = {current: [], neighbour: []}
        self._started = 0  # steps of the probe begun

    def next_threads(self) -> int:
        self._started += 1
        return self.current if self._started <= self.steps + 1 else self.neighbour

    def record(self, threads: int, seconds: float) -> None:
        if self._started not in (1, self.steps + 2):  # the first step of a block
            self.times[threads].append(seconds)

    @property
    def done(self) -> bool:
        return len(self.times[self.neighbour]) >= self.steps
