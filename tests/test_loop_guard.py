"""A reply that loops is stopped: the guard's count, and the client that acts on it."""

from __future__ import annotations

import threading

import pytest

from glm_client import Done, LocalClient, Message, Notice, TextDelta, ToolCall
from glm_client.agent import run_turn
from glm_client.config import ConfigError, GenerationParams
from glm_client.dialects.base import INTERPRETER_TOOL
from glm_client.engines.base import EngineInfo
from glm_client.loop_guard import MAX_PERIOD, loop_end
from tools import get_tools

PROSE = list(range(1000, 1010))  # ten ids that repeat nothing, before each loop


@pytest.mark.parametrize(("period", "loop_tokens"), [(1, 64), (2, 64), (7, 64), (21, 64), (30, 90), (MAX_PERIOD, 192)])
def test_a_block_written_three_times_is_a_loop_once_it_covers_min_tokens(period: int, loop_tokens: int) -> None:
    block = list(range(period))
    assert loop_end(PROSE + block * 100, 64) == len(PROSE) + loop_tokens


def test_a_block_longer_than_max_period_is_no_loop() -> None:
    assert loop_end(PROSE + list(range(MAX_PERIOD + 1)) * 20, 64) is None


def test_a_line_written_twice_is_no_loop() -> None:
    line = list(range(40))
    assert loop_end(PROSE + line + line + PROSE + line + line + PROSE, 64) is None


def test_lines_that_differ_in_one_token_are_no_loop() -> None:
    numbered_lines = [token for number in range(200) for token in (5, 6, 2000 + number, 7)]  # "x = [n]\n"
    assert loop_end(numbered_lines, 64) is None


def test_a_break_in_the_repeat_starts_the_count_again() -> None:
    assert loop_end([7] * 60 + [8] + [7] * 100, 64) == 61 + 64


def test_zero_never_stops_a_loop() -> None:
    assert loop_end([7] * 1000, 0) is None


def test_loop_stop_tokens_below_32_is_refused_in_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"loop_stop_tokens must be 0 \(off\) or at least 32, got 16\."):
        GenerationParams(loop_stop_tokens=16)


class ReplayEngine:
    """Yields the ids of a set reply, counting how many the client took before it stopped reading."""

    def __init__(self, tokenizer, reply: str) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer
        self.tokenizer_lock = threading.Lock()
        self.info = EngineInfo("replay", "cpu", "none", 4096, "test")
        self.ids = tokenizer.encode(reply, add_special_tokens=False)
        self.taken = 0

    @property
    def vocab_size(self) -> int:  # a forced call's grammar is built for it
        return len(self.tokenizer)

    def generate(self, input_ids, params, stop_ids, cancel=None, constraint=None):  # type: ignore[no-untyped-def]
        for token in self.ids[: params.max_new_tokens]:
            self.taken += 1
            yield token


def replay(embedded_client: LocalClient, reply: str, **params: object) -> tuple[list[object], ReplayEngine]:
    engine = ReplayEngine(embedded_client.engine.tokenizer, reply)
    client = LocalClient(engine, embedded_client.dialect)  # type: ignore[arg-type]
    events = list(client.stream([Message.user("Go on.")], max_new_tokens=2000, **params))
    return events, engine


@pytest.mark.model
def test_a_looping_code_block_ends_where_it_stopped_and_is_not_run(embedded_client: LocalClient) -> None:
    reply = "I will draw it.\n\n```python\nimport numpy as np\n" + "import random\n" * 80 + "```\n"
    engine = ReplayEngine(embedded_client.engine.tokenizer, reply)
    client = LocalClient(engine, embedded_client.dialect)  # type: ignore[arg-type]
    events = list(client.stream([Message.user("Plot a sine.")], [INTERPRETER_TOOL], max_new_tokens=2000))

    assert engine.taken < len(engine.ids) // 2  # the loop was not written to the end
    (call,) = [event for event in events if isinstance(event, ToolCall)]  # the code so far, to show
    assert call.name == "interpreter" and call.arguments["code"].startswith("import numpy as np\nimport random\n")
    assert call.arguments["code"].count("import random") < 40
    assert call.parse_error == "The reply was stopped as a loop before the call ended, so it was not run."
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert notices == [
        "Stopped the reply: the model was writing the same text over and over (loop_stop_tokens=64; 0 lets it run on)."
    ]
    assert isinstance(events[-1], Done)


@pytest.mark.model
def test_a_call_cut_off_at_max_new_tokens_is_answered_not_run(embedded_client: LocalClient) -> None:
    code = "import os\nfor name in os.listdir():\n    os.remove(name)\nprint('cleaned')"
    tokenizer = embedded_client.engine.tokenizer
    client = LocalClient(ReplayEngine(tokenizer, f"```python\n{code}\n```\n"), embedded_client.dialect)  # type: ignore[arg-type]
    ran: list[str] = []

    def execute(call: ToolCall) -> Message:
        ran.append(call.code or "")
        return Message.observation("cleaned", name=call.name, tool_call_id=call.id)

    def turn(**params: object) -> tuple[list[Message], list[ToolCall]]:
        conversation = [Message.user("Clean up.")]
        events = list(run_turn(client, conversation, execute, [INTERPRETER_TOOL], max_rounds=1, **params))
        return conversation, [event for event in events if isinstance(event, ToolCall)]

    cut = len(tokenizer.encode("```python\nimport os\nfor name in os.listdir():\n", add_special_tokens=False))
    conversation, (call,) = turn(max_new_tokens=cut)
    assert call.code.startswith("import os\nfor name in os.listdir():") and "remove" not in call.code
    assert call.parse_error == f"The reply reached max_new_tokens={cut} before the call ended, so it was not run."
    assert ran == []  # the loop's body was never written: nothing ran
    assert conversation[2].is_error and conversation[2].content == f"Your tool call was not run: {call.parse_error}"

    turn(max_new_tokens=200)  # the same reply written to its end runs
    assert ran == [code]


@pytest.mark.model
def test_a_looping_reply_stops_and_zero_lets_it_run(embedded_client: LocalClient) -> None:
    reply = "Here you are: " + "hello, " * 300
    events, engine = replay(embedded_client, reply)
    text = "".join(event.text for event in events if isinstance(event, TextDelta))
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop"
    assert engine.taken == done.usage.completion_tokens < 100 and text.endswith("hello,")
    assert any(isinstance(event, Notice) for event in events)

    events, engine = replay(embedded_client, reply, loop_stop_tokens=0)
    assert engine.taken == len(engine.ids) and not any(isinstance(event, Notice) for event in events)


@pytest.mark.model
def test_a_forced_call_that_loops_is_left_to_its_grammar(embedded_client: LocalClient) -> None:
    # Greedy, the embedded model forced to call the calculator for "What is 37 * 3?" writes this.
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "); ' + "3; " * 40 + '"}}</tool_call>'
    engine = ReplayEngine(embedded_client.engine.tokenizer, call)
    client = LocalClient(engine, embedded_client.dialect)  # type: ignore[arg-type]
    events = list(client.stream([Message.user("What is 37 * 3?")], get_tools(), force_tool="calculator"))
    (parsed,) = [event for event in events if isinstance(event, ToolCall)]
    assert parsed.parse_error is None and parsed.arguments["expression"].count("3;") == 40
    assert engine.taken == len(engine.ids) and not any(isinstance(event, Notice) for event in events)
