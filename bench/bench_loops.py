"""What the loop guard stops in stored replies: how many loops, and how many tokens they spared.

    .venv/bin/python bench/bench_loops.py DATA_DIR [DATA_DIR ...] [--loop-stop-tokens 64] [--show]

Reads every assistant reply of each DATA_DIR's SQLite store (bench_load.py prints its DATA_DIR),
re-tokenizes what the model wrote (`meta["raw_output"]`) with the embedded model's tokenizer,
and feeds it to `LoopGuard`. Replies the guard already stopped count as stopped there. Prints
the loops found (`--show`: the block each one repeats, to read them for false alarms) and the
tokens written after each loop began to repeat, which stopping would have spared.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoTokenizer

from glm_client import embedded
from glm_client.config import GenerationParams, default_cache_dir
from glm_client.loop_guard import loop_end
from store import open_store


def stored_replies(data_dir: Path) -> list[str]:
    store = open_store(None, data_dir)
    try:
        conversations = [store.load(summary.id) for summary in store.list(limit=1_000_000)]
    finally:
        store.close()
    return [
        message.meta["raw_output"]
        for conversation in conversations
        if conversation is not None
        for message in conversation.messages
        if message.role == "assistant" and message.meta.get("raw_output")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="+", type=Path)
    parser.add_argument("--loop-stop-tokens", type=int, default=GenerationParams().loop_stop_tokens)
    parser.add_argument("--show", action="store_true", help="print the repeated text of each loop")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(embedded.cache_path(default_cache_dir(os.environ)))
    replies = [tokenizer.encode(raw, add_special_tokens=False) for d in args.data_dirs for raw in stored_replies(d)]
    total = spared = loops = 0
    for ids in replies:
        total += len(ids)
        end = loop_end(ids, args.loop_stop_tokens)
        if end is None:
            continue
        loops += 1
        spared += len(ids) - end
        if args.show:
            print(f"  {len(ids):4d} tokens, stopped at {end}: {tokenizer.decode(ids[end - 24 : end])!r}")
    print(
        f"{len(replies)} replies, {total} tokens, in {len(args.data_dirs)} data dir(s); loop_stop_tokens "
        f"{args.loop_stop_tokens}: {loops} loops, {spared} tokens spared ({spared / max(total, 1):.1%})"
    )


if __name__ == "__main__":
    main()
