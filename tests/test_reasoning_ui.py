"""The Chat page with a thinking model (scripted): the thinking block apart from the answer, the switch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui.model
from glm_client.events import Done, ReasoningDelta, TextDelta
from glm_client.testing import ScriptedClient

PAGE = str(Path(__file__).resolve().parent.parent / "modes" / "chat.py")


def open_page(monkeypatch, thinking_switch: bool = False) -> tuple[AppTest, ScriptedClient]:
    client = ScriptedClient()
    client.info = dataclasses.replace(client.info, thinking_switch=thinking_switch)
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: client)
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.run()
    return app, client


@pytest.fixture
def page(monkeypatch):
    return open_page(monkeypatch)


def send(app: AppTest, text: str) -> None:
    app.chat_input(key="chat_input").set_value(text).run()
    assert not app.exception


def test_the_thinking_shows_in_its_own_block_above_the_answer(page):
    app, client = page
    client.queue([ReasoningDelta("Greet <b>warmly</b>, "), ReasoningDelta("then **help**."), TextDelta("Hello!")])
    send(app, "Hi")
    reply = app.chat_message[1]
    (block,) = reply.expander
    assert block.label.startswith("Thought for ") and block.label.endswith(" s")
    # Model text is sanitised like a reply: the HTML shows as text.
    assert [md.value for md in block.markdown] == ["Greet \\<b>warmly\\</b>, then **help**."]
    assert [md.value for md in reply.markdown] == [block.markdown[0].value, "Hello!"]  # thinking first, apart


def test_a_reply_without_thinking_has_no_thinking_block(page):
    app, client = page
    client.queue("Hello!")
    send(app, "Hi")
    assert len(app.chat_message[1].expander) == 0


def test_a_reply_cut_off_while_thinking_says_so(page):
    app, client = page
    client.queue([ReasoningDelta("Let me consider every case"), Done("length")])
    send(app, "Hi")
    captions = [caption.value for caption in app.chat_message[1].caption]
    assert any("ran out of tokens while still thinking" in caption for caption in captions)
    assert app.chat_message[1].expander[0].markdown[0].value == "Let me consider every case"


def test_a_reply_cut_off_after_thinking_gets_the_usual_caption(page):
    app, client = page
    client.queue([ReasoningDelta("Short."), TextDelta("The answer is"), Done("length")])
    send(app, "Hi")
    captions = " ".join(caption.value for caption in app.chat_message[1].caption)
    assert "max-new-tokens limit" in captions and "still thinking" not in captions


def test_the_thinking_switch_shows_only_for_models_that_take_it(monkeypatch):
    app, client = open_page(monkeypatch, thinking_switch=False)
    assert [toggle.label for toggle in app.sidebar.toggle] == []
    client.queue("ok")
    send(app, "Hi")
    assert "enable_thinking" not in client.requests[0][2]

    app, client = open_page(monkeypatch, thinking_switch=True)
    switch = app.sidebar.toggle(key="chat_enable_thinking")
    assert switch.label == "Thinking" and switch.value is True
    client.queue("one", "two")
    send(app, "Hi")
    app.sidebar.toggle(key="chat_enable_thinking").set_value(False).run()
    send(app, "Again")
    assert [request[2]["enable_thinking"] for request in client.requests] == [True, False]


def live_turn() -> None:
    """A script for AppTest: one streamed turn, no rerun after it (the page would redraw from history)."""
    import streamlit as st

    from glm_client.events import Done, ReasoningDelta, TextDelta
    from ui.conversation import stream_turn

    events = [ReasoningDelta("Is it "), ReasoningDelta("a greeting?"), TextDelta("Hello!"), Done("stop")]
    stream_turn(iter(events), st.empty())


def test_the_live_thinking_block_closes_to_thought_for_n_s_when_the_answer_begins():
    app = AppTest.from_function(live_turn, default_timeout=30)
    app.run()
    assert not app.exception
    (block,) = app.status
    assert block.label.startswith("Thought for ") and block.state == "complete"
    assert [md.value for md in block.markdown] == ["Is it a greeting?"]
    assert app.chat_message[0].markdown[-1].value == "Hello!"


def call_being_written() -> None:
    """A script for AppTest: a turn that ends while the model is still writing its call."""
    import streamlit as st

    from glm_client.events import Done, ToolCallProgress, ToolCallStart
    from ui.conversation import stream_turn

    events = [ToolCallStart("python"), ToolCallProgress(1), ToolCallProgress(2), Done("cancelled")]
    stream_turn(iter(events), st.empty())


def test_a_call_being_written_shows_its_progress_in_its_status():
    app = AppTest.from_function(call_being_written, default_timeout=30)
    app.run()
    assert not app.exception
    (status,) = app.status
    # The first count draws at once; the second, a moment later, waits for the redraw budget.
    assert status.label == "Calling `python`… (1 tokens)"
