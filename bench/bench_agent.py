"""Agent success: Tool and Code Interpreter tasks with checkable results, through run_turn.

Run: .venv/bin/python bench/bench_agent.py [--only tool|code] [--max-new-tokens 256]

The model is whatever the settings name (MODEL_PATH, OPENAI_BASE_URL, or the embedded
one), with the pages' default system prompts, greedy decoding and MAX_ROUNDS. A task
succeeds on what can be observed, never on wording: the right number in the final
answer or in an observation, a file that exists, a plot that came back. Per task it
prints success, rounds, calls, completion tokens and seconds; then the totals.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glm_client import Message, Settings, load_client
from glm_client.agent import run_turn
from glm_client.dialects.base import INTERPRETER_TOOL
from kernel import KernelSession
from kernel.executor import kernel_executor
from sandbox.bwrap import MOUNT_POINT
from tools import get_tools
from tools.executor import tool_executor
from ui.prompts import CODE_INTERPRETER_SYSTEM_PROMPT, TOOL_SYSTEM_PROMPT

Check = Callable[[list[Message], Path], bool]


@dataclass
class Task:
    mode: str  # "tool" or "code"
    question: str
    check: Check


NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:e-?\d+)?")


def numbers_in(text: str) -> list[float]:
    values = []
    for found in NUMBER.findall(text):
        try:
            values.append(float(found.replace(",", "")))
        except ValueError:
            continue
    return values


def number(expected: float, tolerance: float = 0.01) -> Check:
    """The number appears in the final answer or in a successful observation; an echo of the question never counts."""

    def check(conversation: list[Message], _workdir: Path) -> bool:
        def close(value: float) -> bool:
            return abs(value - expected) <= tolerance * max(1.0, abs(expected))

        asked = numbers_in(next(m.content for m in conversation if m.role == "user"))
        texts = [m.content for m in conversation if m.role == "observation" and not m.is_error]
        texts += [m.content for m in conversation[-1:] if m.role == "assistant"]
        return not any(close(value) for value in asked) and any(close(v) for t in texts for v in numbers_in(t))

    return check


def file_exists(name: str) -> Check:
    return lambda _conversation, workdir: (workdir / name).is_file()


def plot_returned(conversation: list[Message], _workdir: Path) -> bool:
    return any(m.images for m in conversation if m.role == "observation")


def observed(pattern: str) -> Check:
    return lambda conversation, _workdir: any(
        re.search(pattern, m.content) for m in conversation if m.role == "observation" and not m.is_error
    )


TASKS = [
    Task("tool", "What is 37 * 43?", number(1591)),
    Task("tool", "Compute 12345 + 67890.", number(80235)),
    Task("tool", "What is 2 to the power of 20?", number(1048576)),
    Task("tool", "How much is 144 divided by 16?", number(9)),
    Task("tool", "What is the square root of 1764?", number(42)),
    Task("tool", "Calculate (17 + 25) * 3.", number(126)),
    Task("tool", "What is 15% of 240?", number(36)),
    Task("tool", "What is 1000 minus 1?", number(999)),
    Task("tool", "Multiply 3.5 by 4.", number(14)),
    Task("tool", "What is 9 factorial? Use the calculator.", number(362880)),
    Task("tool", "Convert 10 kilometers to miles.", number(6.2137)),
    Task("tool", "Convert 100 degrees Fahrenheit to Celsius.", number(37.78)),
    Task("tool", "How many pounds are 5 kilograms?", number(11.023)),
    Task("tool", "Convert 2 hours to minutes.", number(120)),
    Task("tool", "How many megabytes are 3 gigabytes?", number(3000)),
    Task("tool", "Convert 1 mile to meters.", number(1609.344)),
    Task("tool", "What time is it now in UTC?", observed(r"\d{2}:\d{2}")),
    Task("tool", "What is the current date and time in Tokyo (Asia/Tokyo)?", observed(r"\d{4}-\d{2}-\d{2}")),
    Task("tool", "Give me a random number between 1 and 6, using seed 7.", observed(r"^\s*[1-6]\s*$")),
    Task("tool", "Pick a random number from 10 to 20 with seed 1.", observed(r"^\s*(1\d|20)\s*$")),
    Task("code", "How many prime numbers are there below 1000?", number(168)),
    Task("code", "What is the sum of the integers from 1 to 100?", number(5050)),
    Task("code", "Compute 10 factorial.", number(3628800)),
    Task("code", "What is the 20th Fibonacci number (F(1) = F(2) = 1)?", number(6765)),
    Task("code", "What is the mean of 3, 9, 15, 4 and 10?", number(8.2)),
    Task("code", "What is the median of 7, 1, 9, 3, 5 and 11?", number(6)),
    Task("code", "How many days are there between 2024-01-01 and 2024-12-25?", number(359)),
    Task("code", "Sort the list [5, 3, 9, 1] and print the sum of its two largest elements.", number(14)),
    Task("code", "What is the sum of the squares of 1 to 10?", number(385)),
    Task("code", "How many vowels are in the word 'encyclopedia'?", number(5)),
    Task("code", "Write the numbers 1 to 10 and their squares to squares.csv.", file_exists("squares.csv")),
    Task("code", "Save the text 'hello' in a file named hello.txt.", file_exists("hello.txt")),
    Task("code", "Plot y = x squared for x from 0 to 10 with matplotlib.", plot_returned),
    Task("code", "Draw a bar chart of the values 3, 7 and 5.", plot_returned),
    Task("code", "What is 2 to the power of 100? Print it exactly.", number(2**100, tolerance=1e-12)),
]


@dataclass
class Outcome:
    success: bool
    rounds: int
    calls: int
    tokens: int
    seconds: float


def attempt(client, task: Task, max_new_tokens: int, workroot: Path, index: int) -> Outcome:
    workdir = workroot / f"task{index}"
    if task.mode == "tool":
        conversation = [Message.system(TOOL_SYSTEM_PROMPT), Message.user(task.question)]
        executor, tools, kernel = tool_executor(), get_tools(), None
    else:
        kernel = KernelSession(workdir)
        where = MOUNT_POINT if kernel.sandbox.sandboxed else "the current working directory"
        conversation = [Message.system(CODE_INTERPRETER_SYSTEM_PROMPT.format(cwd=where)), Message.user(task.question)]
        executor, tools = kernel_executor(kernel, timeout=60), [INTERPRETER_TOOL]
    started = time.perf_counter()
    try:
        for _ in run_turn(client, conversation, executor, tools, temperature=0.0, max_new_tokens=max_new_tokens):
            pass
    finally:
        if kernel is not None:
            kernel.shutdown()
    seconds = time.perf_counter() - started
    replies = [m for m in conversation if m.role == "assistant"]
    return Outcome(
        success=task.check(conversation, workdir),
        rounds=len(replies),
        calls=sum(len(m.tool_calls) for m in replies),
        tokens=sum(int(m.meta.get("completion_tokens", 0)) for m in replies),
        seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tool", "code"])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    client = load_client(Settings.from_env())
    print(f"model: {client.info.name} ({client.info.backend}, dialect {client.info.dialect})")
    totals: dict[str, list[Outcome]] = {"tool": [], "code": []}
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as root:
        for index, task in enumerate(TASKS):
            if args.only and task.mode != args.only:
                continue
            outcome = attempt(client, task, args.max_new_tokens, Path(root), index)
            totals[task.mode].append(outcome)
            mark = "ok  " if outcome.success else "fail"
            print(
                f"{mark} {task.mode:4} rounds {outcome.rounds} calls {outcome.calls} tokens {outcome.tokens:4} "
                f"{outcome.seconds:5.1f} s  {task.question}",
                flush=True,
            )
    print(
        "\n| mode | tasks | succeeded | rounds | calls | tokens | seconds |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    for mode, outcomes in totals.items():
        if outcomes:
            print(
                f"| {mode} | {len(outcomes)} | {sum(o.success for o in outcomes)} | {sum(o.rounds for o in outcomes)} "
                f"| {sum(o.calls for o in outcomes)} | {sum(o.tokens for o in outcomes)} "
                f"| {sum(o.seconds for o in outcomes):.0f} |"
            )


if __name__ == "__main__":
    main()
