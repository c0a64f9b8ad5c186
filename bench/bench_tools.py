"""What it costs to run a tool where a timeout can really stop it, and how fast a runaway is stopped.

Run: .venv/bin/python bench/bench_tools.py [--runs 300] [--fresh-runs 10]

1. Per-call time of `calculator("1+1")`, the cheapest tool, so this is the overhead:
   - thread: the old way (a daemon thread per call; a timeout can only abandon it),
   - warm worker: dispatch_tool today (a pickled job to a warm worker process),
   - fresh subprocess per call: start `python`, import `tools`, call, kill,
   - forkserver child per call: multiprocessing's forkserver with `tools` preloaded (each
     child still re-imports the parent's main module, as multiprocessing does, a real cost
     of that option in an app started as a script).
2. A runaway call stuck in C code holding the GIL (`10 ** (2 * 10**7)`, a TOOLS_DIR tool)
   with timeout=0.5: how long until dispatch_tool returns, the longest pause of a thread
   ticking every 10 ms meanwhile, whether the worker is gone, and the next call's time.
   The thread way is shown on a shorter runaway (`10 ** (3 * 10**6)`, timeout=0.2): its
   return waits for the C code to finish, and every other thread of the app waits too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from tools import default_registry, dispatch_tool, load_tools_dir
from tools.dispatch import run_in_thread
from tools.isolation import Worker, locate, pool

ARGS = {"expression": "1+1"}
RUNAWAY_TOOL = '''
from tools import register_tool

@register_tool
def _bench_power(exponent: int) -> int:
    """10 ** exponent, computed in C with the GIL held."""
    return 10 ** exponent
'''


def median_ms(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def fresh_subprocess_call() -> None:
    tool = default_registry.get("calculator")
    ref = locate(tool.function) if tool else None
    assert ref is not None
    worker = Worker()
    try:
        worker.ensure_ready()
        assert worker.call(ref, ARGS, "/tmp", 30) is not None
    finally:
        worker.kill()


def _forkserver_target(connection: Connection) -> None:
    connection.send(dispatch_tool("calculator", ARGS).text)


def forkserver_call(context: multiprocessing.context.BaseContext) -> None:
    ours, theirs = context.Pipe()
    process = context.Process(target=_forkserver_target, args=(theirs,))
    process.start()
    assert ours.recv() == "2"
    process.join()


@contextmanager
def ticker() -> Iterator[list[float]]:
    """Ticks every 10 ms; yields a list that ends up holding the longest gap between ticks."""
    gaps: list[float] = [0.0]
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.wait(0.01):
            now = time.perf_counter()
            gaps[0] = max(gaps[0], now - last)
            last = now

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield gaps
    finally:
        stop.set()
        thread.join()


def runaway(exponent: int, timeout: float, threaded: bool) -> tuple[float, float, str]:
    tool = default_registry.get("_bench_power")
    assert tool is not None
    with ticker() as gaps:
        started = time.perf_counter()
        if threaded:
            result = run_in_thread(tool, {"exponent": exponent}, timeout)
        else:
            result = dispatch_tool("_bench_power", {"exponent": exponent}, timeout=timeout)
        elapsed = time.perf_counter() - started
        time.sleep(0.05)  # a tick after the return, so a freeze that outlasts the call shows too
    return elapsed, gaps[0], result.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--fresh-runs", type=int, default=10)
    options = parser.parse_args()

    calculator = default_registry.get("calculator")
    assert calculator is not None
    dispatch_tool("calculator", ARGS)  # the first call starts a worker: not what is measured
    print(f"per-call time of calculator('1+1'), median (load average {psutil.getloadavg()[0]:.1f}):")
    thread_ms = median_ms(lambda: run_in_thread(calculator, ARGS, 30), options.runs)
    print(f"  thread (old, not killable)     {thread_ms:8.3f} ms   ({options.runs} runs)")
    warm_ms = median_ms(lambda: dispatch_tool("calculator", ARGS), options.runs)
    print(f"  warm worker process (chosen)   {warm_ms:8.3f} ms   ({options.runs} runs)")
    fresh_ms = median_ms(fresh_subprocess_call, options.fresh_runs)
    print(f"  fresh subprocess per call      {fresh_ms:8.3f} ms   ({options.fresh_runs} runs)")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tools"])
    forkserver_call(context)  # starts the fork server
    fork_ms = median_ms(lambda: forkserver_call(context), options.fresh_runs)
    print(f"  forkserver child per call      {fork_ms:8.3f} ms   ({options.fresh_runs} runs)")

    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "bench_power.py").write_text(RUNAWAY_TOOL)
        assert load_tools_dir(directory) == []
        dispatch_tool("_bench_power", {"exponent": 1})  # warm
        before = set(pool.live_pids())
        elapsed, gap, text = runaway(2 * 10**7, 0.5, threaded=False)
        killed = before - set(pool.live_pids())
        gone = all(not psutil.pid_exists(pid) for pid in killed)
        print("runaway 10 ** (2 * 10**7), timeout=0.5 s:")
        print(f"  worker process: returned after {elapsed:.3f} s, longest tick gap {gap * 1000:.0f} ms: {text}")
        print(f"    its worker killed and gone: {bool(killed) and gone}")
        started = time.perf_counter()
        next_text = dispatch_tool("calculator", ARGS).text
        print(f"    next call: {next_text!r} after {(time.perf_counter() - started) * 1000:.1f} ms")
        elapsed, gap, text = runaway(3 * 10**6, 0.2, threaded=True)
        print("runaway 10 ** (3 * 10**6), timeout=0.2 s, the old thread way:")
        print(f"  thread: returned after {elapsed:.3f} s, longest tick gap {gap * 1000:.0f} ms: {text}")
        default_registry.unregister("_bench_power")


if __name__ == "__main__":
    main()
