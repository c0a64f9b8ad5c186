"""Memory of switching models: does unloading one give its memory back?

    .venv/bin/python bench/bench_models.py [--tokens 16] [--cycles 2]

One process, one ModelPool over a MODELS_FILE with the embedded model twice, at int4
(QUANTIZE=4) and at bf16 (QUANTIZE=none, DTYPE=bfloat16), with MAX_LOADED_MODELS=1. The
resident memory (VmRSS of /proc/self/status) is read before any model, after loading,
after a short greedy reply, after unloading, after loading again, after switching to
bf16 (which unloads int4 first) and after unloading everything, with the peak (VmHWM,
reset before each step) during each step; then `--cycles` more
load/reply/unload cycles of both show whether memory creeps up. torch and transformers
are imported, and one throwaway load warms their caches, before the first figure, so
what is measured is the model's own memory. Ratios are of figures from this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glm_client import Message, Settings
from glm_client.client import Client
from glm_client.models import ModelPool

MODELS = """
[models.int4]
quantize = "4"

[models.bf16]
quantize = "none"
dtype = "bfloat16"
"""
PROMPT = [Message.user("Name three colours.")]


def status_mib(field: str) -> float:
    """VmRSS (resident now) or VmHWM (the peak since `reset_peak`) from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS


def reply(client: Client, tokens: int) -> None:
    client.chat(PROMPT, temperature=0.0, max_new_tokens=tokens, repetition_penalty=1.0, loop_stop_tokens=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per reply")
    parser.add_argument("--cycles", type=int, default=2, help="extra load/reply/unload cycles of both models")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL", "MODELS_FILE")}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "models.toml"
        path.write_text(MODELS)
        pool = ModelPool(Settings.from_env({**env, "MODELS_FILE": str(path), "MAX_LOADED_MODELS": "1"}))
        # Warm-up: imports, tokenizer files, torch's allocator pools and thread teams are not the model's memory.
        reply(pool.get("int4"), 2)
        pool.close()

        rows: list[tuple[str, float, float, float]] = []  # (step, RSS MiB after, peak RSS MiB during, seconds)

        def step(name: str, action: Callable[[], object]) -> float:
            reset_peak()
            started = time.perf_counter()
            action()
            seconds = time.perf_counter() - started
            rows.append((name, status_mib("VmRSS"), status_mib("VmHWM"), seconds))
            return rows[-1][1]

        before = step("before any model", lambda: None)
        step("int4 loaded", lambda: pool.get("int4"))
        replied = step(f"int4 after a {args.tokens}-token reply", lambda: reply(pool.get("int4"), args.tokens))
        unloaded = step("int4 unloaded", lambda: pool.unload("int4"))
        step("int4 loaded again + reply", lambda: reply(pool.get("int4"), args.tokens))
        bf16 = step("bf16 loaded + reply (int4 unloaded first)", lambda: reply(pool.get("bf16"), args.tokens))
        assert pool.loaded() == ["bf16"]
        bf16_back = step("all unloaded", pool.close)

        def cycle() -> None:
            for name in ("int4", "bf16"):
                reply(pool.get(name), args.tokens)
            pool.close()

        for number in range(1, args.cycles + 1):
            step(f"after cycle {number} (int4, bf16, unload all)", cycle)

    print(f"{'step':<48} {'RSS MiB':>8} {'vs before':>10} {'peak MiB':>9} {'step s':>7}")
    for name, rss, peak, seconds in rows:
        print(f"{name:<48} {rss:8.1f} {rss - before:+10.1f} {peak:9.1f} {seconds:7.2f}")
    int4_cost = replied - before
    print()
    print(
        f"int4 model + reply: {int4_cost:.1f} MiB; given back on unload: {replied - unloaded:.1f} MiB "
        f"= {(replied - unloaded) / int4_cost:.0%}"
    )
    print(
        f"bf16 model + reply: {bf16 - before:.1f} MiB = {(bf16 - before) / int4_cost:.2f}x int4's; "
        f"given back: {bf16 - bf16_back:.1f} MiB = {(bf16 - bf16_back) / (bf16 - before):.0%}"
    )
    switch_peak = rows[5][2]
    print(
        f"peak while switching int4 -> bf16: {switch_peak - before:+.1f} MiB over before "
        f"= {(switch_peak - before) / max(int4_cost, bf16 - before):.2f}x the larger model (2 would mean both in memory)"
    )
    print(
        f"left after {args.cycles} more cycles: {rows[-1][1] - before:+.1f} MiB over before "
        f"({(rows[-1][1] - before) / int4_cost:.0%} of one int4 model)"
    )


if __name__ == "__main__":
    main()
