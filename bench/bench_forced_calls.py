"""Forced calculator calls on the embedded model: are the arguments useful?

Run: .venv/bin/python bench/bench_forced_calls.py

Five arithmetic questions, greedy, "Force a tool call" = calculator. For each grammar it
prints every expression the model wrote and what it evaluates to, then how many were
non-blank and how many were right. Three grammars, in one run:
  - spaced, blank allowed: JSON with ", " and ": " and no rule against a blank required
    string (the grammar before issue 21);
  - spaced, never blank: today's (CALL_SEPARATORS, REQUIRED_STRING);
  - compact, never blank: "," and ":" (better here, but nested objects and arrays then run
    on to max_new_tokens: tests/test_constrained.py fails with it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from glm_client import Message, Settings, ToolCall, constrained, load_client
from tools import get_tools
from tools.calculator import evaluate

QUESTIONS = [
    ("What is 37 * 3?", 111),
    ("Compute 12 + 30.", 42),
    ("What is 2 to the power of 10?", 1024),
    ("How much is 144 divided by 12?", 12),
    ("What is the square root of 81?", 9),
]
TODAY = (constrained.CALL_SEPARATORS, constrained.REQUIRED_STRING)
GRAMMARS = {
    "spaced, blank allowed": ((", ", ": "), constrained.FREE_STRING),
    "spaced, never blank (today)": TODAY,
    "compact, never blank": ((",", ":"), constrained.REQUIRED_STRING),
}


def main() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL")}
    client = load_client(Settings.from_env({**env, "ENGINE": "transformers"}))
    tools = get_tools()
    summary = []
    for label, (separators, required) in GRAMMARS.items():
        constrained.CALL_SEPARATORS, constrained.REQUIRED_STRING = separators, required
        print(f"\n{label}")
        blank = right = 0
        for question, answer in QUESTIONS:
            events = client.stream([Message.user(question)], tools, force_tool="calculator", temperature=0.0)
            call = next(event for event in events if isinstance(event, ToolCall))
            expression = str(call.arguments.get("expression", ""))
            try:
                value: object = evaluate(expression)
            except Exception as error:  # the bench reports what the tool would say
                value = f"error: {error}"
            blank += not expression.strip()
            right += isinstance(value, int | float) and abs(value - answer) < 1e-9
            print(f"  {question!r}: {expression[:60]!r} -> {value!r} (want {answer})")
        summary.append((label, len(QUESTIONS) - blank, right))
    constrained.CALL_SEPARATORS, constrained.REQUIRED_STRING = TODAY
    print("\n| grammar | non-blank | right |\n| --- | --- | --- |")
    for label, non_blank, right in summary:
        print(f"| {label} | {non_blank}/{len(QUESTIONS)} | {right}/{len(QUESTIONS)} |")


if __name__ == "__main__":
    main()
