"""The Tool page in AppTest with a scripted model: real tools run, manual mode, forced calls, limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui.model
from glm_client import ToolCall
from glm_client.testing import ScriptedClient

PAGE = str(Path(__file__).resolve().parent.parent / "modes" / "tool.py")


@pytest.fixture
def page(monkeypatch):
    client = ScriptedClient()
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: client)
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.run()
    return app, client


def test_a_call_runs_the_real_tool_and_the_model_reads_its_result(page):
    app, client = page
    client.queue([ToolCall("calculator", {"expression": "6*7"})], "The answer is 42.")
    app.chat_input(key="tool_input").set_value("What is 6 times 7?").run()
    assert not app.exception
    observation = client.requests[1][0][-1]
    assert observation.role == "observation" and observation.name == "calculator" and "42" in observation.content
    labels = [expander.label for expander in app.expander]
    assert any(label.startswith("calculator(") for label in labels)
    (result,) = [label for label in labels if "Result of `calculator`" in label]
    assert re.fullmatch(r"📤 Result of `calculator` · \d+\.\d\d s", result)  # the saved view keeps the duration
    assert "The answer is 42." in [md.value for md in app.chat_message[1].markdown]
    offered = {tool["function"]["name"] for tool in client.requests[0][1]}
    assert {"calculator", "unit_convert", "get_current_time"} <= offered and "shell" not in offered


def test_the_model_reads_as_much_of_a_long_result_as_its_context_holds(page):
    """2**4000 has 1,205 digits, a token a digit: the scripted model's 4,096-token context reads 1,024 characters."""
    app, client = page
    client.queue([ToolCall("calculator", {"expression": "2**4000"})], "A big number.")
    app.chat_input(key="tool_input").set_value("What is 2 to the 4000th?").run()
    assert not app.exception
    observation = client.requests[1][0][-1]
    digits = str(2**4000)
    assert len(observation.content) <= 1024 < len(digits)
    assert observation.content.startswith(digits[:400]) and observation.content.endswith(digits[-400:])
    assert "characters omitted" in observation.content
    assert observation.meta["full_text"] == digits  # the user's copy is whole


def test_disabled_tools_are_listed_as_disabled(page):
    app, _ = page
    sidebar_text = " ".join(md.value for md in app.sidebar.markdown)
    assert "⛔ ~~shell~~" in sidebar_text and "✅ **calculator**" in sidebar_text


def test_an_unknown_tool_is_reported_to_the_model_not_the_page(page):
    app, client = page
    client.queue([ToolCall("teleport", {"to": "Mars"})], "Sorry, I cannot teleport.")
    app.chat_input(key="tool_input").set_value("Beam me up").run()
    assert not app.exception
    observation = client.requests[1][0][-1]
    assert observation.is_error and observation.content.startswith("Tool `teleport` not found; available tools:")


def test_manual_mode_waits_for_a_typed_observation(page):
    app, client = page
    client.queue([ToolCall("get_current_weather", {"location": "Paris"})], "It is 21 degrees in Paris.")
    app.sidebar.toggle(key="tool_manual").set_value(True).run()
    app.chat_input(key="tool_input").set_value("Weather in Paris?").run()
    assert client.requests[0][1][0]["function"]["name"] == "get_current_weather"
    assert len(client.requests) == 1  # waiting for the human
    form_area = next(area for area in app.text_area if area.key.startswith("tool_observation_"))
    form_area.input("21 °C, sunny")
    next(button for button in app.button if button.label == "Send results").click().run()
    assert not app.exception
    sent = client.requests[1][0][-1]
    assert sent.role == "observation" and sent.content == "21 °C, sunny" and sent.name == "get_current_weather"
    assert "It is 21 degrees in Paris." in [md.value for md in app.chat_message[-1].markdown]


def test_bad_manual_definitions_show_an_error(page):
    app, _ = page
    app.sidebar.toggle(key="tool_manual").set_value(True).run()
    app.sidebar.text_area(key="tool_definitions").set_value("- name: [unclosed").run()
    assert any("not valid YAML" in error.value for error in app.sidebar.error)


def test_force_tool_choice_reaches_the_model_for_the_first_round_only(page):
    app, client = page
    client.queue([ToolCall("calculator", {"expression": "1+1"})], "2")
    app.sidebar.selectbox(key="tool_force").set_value("calculator").run()
    app.chat_input(key="tool_input").set_value("add").run()
    assert client.requests[0][2].get("force_tool") == "calculator"
    assert "force_tool" not in client.requests[1][2]


def test_the_round_limit_is_shown(page, monkeypatch):
    app, client = page
    client.queue(*[[ToolCall("calculator", {"expression": f"{i}+1"})] for i in range(5)])
    app.chat_input(key="tool_input").set_value("keep calculating").run()
    assert not app.exception
    assert len(client.requests) == 6 and client.requests[-1][1] is None  # a last round, with no tools
    assert any("Stopped calling tools after 5 rounds" in info.value for info in app.info)


def test_regenerate_answers_the_last_message_again_and_replaces_the_reply(page):
    app, client = page
    client.queue([ToolCall("calculator", {"expression": "6*7"})], "It is 42.", "Forty-two.")
    app.chat_input(key="tool_input").set_value("What is 6 times 7?").run()
    app.button(key="tool_regenerate").click().run()
    assert not app.exception
    assert client.requests[-1][0][-1].content == "What is 6 times 7?"
    assert [m.role for m in client.requests[-1][0]] == ["system", "user"]  # the old reply and its call are gone
    assert "Forty-two." in [md.value for md in app.chat_message[-1].markdown]
    assert len(app.chat_message) == 2
