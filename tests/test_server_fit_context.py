"""Trimming a long history to the context (`LocalClient.fit_context`): exact outcomes, and linear cost.

A counting dialect makes token counts hand-computable: each message is a marker token
plus one token per character of its content (all equal to its first character), and
the prompt ends with one generation-prompt token. With context 100 and 10 reply
tokens the prompt budget is 90.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from glm_client import LocalClient, Message
from glm_client.engines.base import EngineInfo

MARK, END = -1, -2


class CountingDialect:
    name = "counting"

    def __init__(self) -> None:
        self.encoded_messages = 0  # work done: messages encoded over all calls

    def stop_token_ids(self) -> list[int]:
        return []

    def encode(self, messages: list[Message], tools=None) -> list[int]:
        self.encoded_messages += len(messages)
        ids: list[int] = []
        for message in messages:
            ids += [MARK] + [ord(message.content[0])] * len(message.content)
        return [*ids, END]


def client(context_length: int = 100) -> tuple[LocalClient, CountingDialect]:
    dialect = CountingDialect()
    engine = SimpleNamespace(
        info=EngineInfo("counting", "cpu", "float32", context_length, "llama"), tokenizer_lock=threading.Lock()
    )
    return LocalClient(engine, dialect), dialect


def kept(prompt: list[int]) -> str:
    """The first letters of the messages in the prompt, in order."""
    return "".join(chr(prompt[i + 1]) for i, token in enumerate(prompt) if token == MARK)


def m(role: str, letter: str, length: int) -> Message:
    return Message(role, letter * length)


def turn(user: str, assistant: str) -> list[Message]:
    return [m("user", user, 19), m("assistant", assistant, 19)]  # 20 + 20 tokens


def test_a_history_that_fits_is_kept_whole():
    local, _ = client()
    prompt, dropped = local.fit_context([m("system", "S", 9), m("user", "U", 19)], None, 10)
    assert (kept(prompt), len(prompt), dropped) == ("SU", 31, 0)


def test_the_fewest_oldest_turns_are_dropped():
    # system 10 + four turns of 40 + the last user 20 + 1 = 191 tokens; 10 + 40 + 20 + 1 = 71 fit in 90.
    history = [m("system", "S", 9), *turn("a", "A"), *turn("b", "B"), *turn("c", "C"), *turn("d", "D")]
    local, _ = client()
    prompt, dropped = local.fit_context([*history, m("user", "e", 19)], None, 10)
    assert (kept(prompt), len(prompt), dropped) == ("SdDe", 71, 6)


def test_a_tool_turn_goes_whole_with_its_calls_and_observations():
    history = [
        m("user", "a", 9),
        m("assistant", "A", 9),
        m("observation", "o", 9),
        m("assistant", "B", 9),  # turn 1: 4 messages, 40 tokens
        m("user", "b", 29),
        m("assistant", "C", 19),  # turn 2: 50 tokens
        m("user", "c", 19),  # the last turn: 20 tokens
    ]
    local, _ = client()
    prompt, dropped = local.fit_context(history, None, 10)  # 111 > 90; 71 fits
    assert (kept(prompt), len(prompt), dropped) == ("bCc", 71, 4)


def test_a_system_message_inside_a_dropped_turn_goes_with_it():
    history = [m("system", "S", 9), m("user", "a", 40), m("system", "T", 9), m("assistant", "A", 9), m("user", "b", 9)]
    local, _ = client()
    prompt, dropped = local.fit_context(history, None, 10)  # 10+41+10+10+10+1 = 82 fits 90
    assert (kept(prompt), dropped) == ("SaTAb", 0)
    prompt, dropped = local.fit_context(history, None, 30)  # budget 70: the first turn goes, system T with it
    assert (kept(prompt), len(prompt), dropped) == ("Sb", 21, 3)


def test_a_history_starting_with_the_assistant_drops_from_there():
    history = [m("assistant", "A", 49), m("user", "a", 29), m("assistant", "B", 9), m("user", "b", 19)]
    local, _ = client()
    prompt, dropped = local.fit_context(history, None, 10)  # 50+30+10+20+1 = 111; 61 fits
    assert (kept(prompt), len(prompt), dropped) == ("aBb", 61, 1)


def test_when_nothing_fits_only_the_system_prompt_and_the_last_turn_are_left():
    history = [m("system", "S", 9), *turn("a", "A"), *turn("b", "B"), m("user", "c", 200)]
    local, _ = client()
    prompt, dropped = local.fit_context(history, None, 10)
    assert (kept(prompt), len(prompt), dropped) == ("Sc", 10 + 201 + 1, 4)


def test_one_long_turn_without_a_later_user_message_is_not_cut():
    history = [m("system", "S", 9), m("user", "a", 99), m("assistant", "A", 99)]
    local, _ = client()
    prompt, dropped = local.fit_context(history, None, 10)
    assert (kept(prompt), dropped) == ("SaA", 0)


@pytest.mark.parametrize("fitting_turns", [0, 1, 2, 3, 7, 30])
def test_every_cut_point_is_found(fitting_turns):
    """With 40 turns of 40 tokens, a budget for k previous turns keeps exactly those k."""
    history = [m("system", "S", 9)]
    for _ in range(40):
        history += turn("a", "A")
    history.append(m("user", "z", 19))
    context = 2 * (10 + 20 + 1 + 40 * fitting_turns + 5)  # budget: half, minus nothing more
    local, _ = client(context)
    prompt, dropped = local.fit_context(history, None, context)  # max_new_tokens over half: budget = half
    assert len(prompt) == 10 + 20 + 1 + 40 * fitting_turns
    assert dropped == 2 * (40 - fitting_turns) and kept(prompt).endswith("z")


def test_trimming_2000_turns_is_linear_work():
    """The old loop re-encoded the whole history per dropped turn: ~2000 x 4000 / 2 messages."""
    history = [m("system", "S", 9)]
    for _ in range(2000):
        history += turn("a", "A")
    history.append(m("user", "z", 19))
    local, dialect = client(4000)
    started = time.perf_counter()
    prompt, dropped = local.fit_context(history, None, 512)  # budget 3488: 10 + 20 + 1 + 40 * 86 = 3471
    assert (len(prompt), dropped) == (3471, 2 * (2000 - 86))
    assert dialect.encoded_messages < 4 * len(history), dialect.encoded_messages
    assert time.perf_counter() - started < 5


@pytest.mark.model
def test_the_real_model_trims_2000_turns_in_seconds(embedded_client):
    """A 1.1 MB history of 2000 turns took 400 s to trim; now one full encode plus a few small ones."""
    history = [Message.system("You are helpful.")]
    for index in range(2000):
        history += [
            Message.user(f"Question {index}: " + "tell me about the weather " * 10),
            Message.assistant("It is sunny. " * 20),
        ]
    history.append(Message.user("And tomorrow?"))
    started = time.perf_counter()
    prompt, dropped = embedded_client.fit_context(history, None, 64)
    elapsed = time.perf_counter() - started
    budget = embedded_client.info.context_length - 64
    assert len(prompt) <= budget and dropped % 2 == 0 and 0 < dropped < len(history) - 2
    # one turn fewer dropped would not fit: the fewest turns went
    fuller = embedded_client._encode([history[0], *history[dropped - 1 :]], None)
    assert len(fuller) > budget
    assert elapsed < 30, f"trimming took {elapsed:.1f} s"
