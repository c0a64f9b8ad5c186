"""The decode thread's torch threads: fixed at every core, fixed at 1, and chosen by timing (thread_tuner.py).

    .venv/bin/python bench/bench_threads.py [--replies 8] [--tokens 300] [--busy 0.75]

Runs `--replies` replies of `--tokens` tokens at once on the embedded model, as 8 users'
replies decode together in the app, and prints the wall time of each setting on free
cores, then beside other processes that keep `--busy` of a core busy (in a session of
their own, as a browser is: Linux shares the cores between sessions first). Last, the
ratios of the tuned setting to each fixed one, measured in this run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_client import LocalClient, Message, load_client  # noqa: E402
from glm_client.engines.thread_tuner import ThreadTuner  # noqa: E402
from glm_client.engines.transformers import TransformersEngine  # noqa: E402

# Each busy process works `duty` of every 10 ms, as a page that redraws does, not a solid loop.
BUSY_PROCESS = """
import sys, time
duty = float(sys.argv[1])
while True:
    started = time.perf_counter()
    while time.perf_counter() - started < 0.01 * duty:
        pass
    time.sleep(0.01 * (1 - duty))
"""
BUSY_PROCESSES = 3


def run_replies(client: LocalClient, replies: int, tokens: int) -> float:
    """Seconds for `replies` replies of `tokens` tokens, started together."""

    def reply(index: int) -> None:
        conversation = [Message.user(f"Write a long story number {index} about a cat and a dog.")]
        for _ in client.stream(conversation, max_new_tokens=tokens, temperature=0.0, loop_stop_tokens=0):
            pass

    threads = [threading.Thread(target=reply, args=(index,)) for index in range(replies)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def busy_elsewhere(cores: float) -> list[subprocess.Popen[bytes]]:
    duty = str(cores / BUSY_PROCESSES)
    return [
        subprocess.Popen([sys.executable, "-c", BUSY_PROCESS, duty], start_new_session=True)
        for _ in range(BUSY_PROCESSES)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--busy", type=float, default=0.75, help="cores kept busy by other processes")
    args = parser.parse_args()
    client = load_client()
    assert isinstance(client, LocalClient)
    engine = client.engine
    assert isinstance(engine, TransformersEngine) and engine.decoder is not None, "needs the packed CPU path"
    cores = torch.get_num_threads()
    settings = {
        f"fixed {cores}": lambda: ThreadTuner(cores, probe_every=0),
        "fixed 1": lambda: ThreadTuner(1),
        "tuned": lambda: ThreadTuner(cores),
    }
    run_replies(client, 2, 20)  # warm-up
    print(f"{args.replies} replies of {args.tokens} tokens at once, embedded model, {cores} cores\n")
    print(f"{'setting':10} {'free cores':>12} {f'{args.busy} busy':>12}   (seconds; ends on)")
    walls: dict[str, list[float]] = {}
    for name, make in settings.items():
        for busy in (0.0, args.busy):
            tuner = engine.decoder.tuner = make()
            others = busy_elsewhere(busy) if busy else []
            try:
                walls.setdefault(name, []).append(run_replies(client, args.replies, args.tokens))
            finally:
                for process in others:
                    process.kill()
                    process.wait()
            walls.setdefault(f"{name} ends on", []).append(tuner.threads)
        ends = walls[f"{name} ends on"]
        print(f"{name:10} {walls[name][0]:12.1f} {walls[name][1]:12.1f}   ({ends[0]} and {ends[1]} threads)")
    for fixed in (f"fixed {cores}", "fixed 1"):
        free, busy = (walls["tuned"][i] / walls[fixed][i] for i in (0, 1))
        print(f"tuned / {fixed}: {free:.2f} on free cores, {busy:.2f} beside {args.busy} busy")


if __name__ == "__main__":
    main()
