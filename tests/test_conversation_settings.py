"""Settings belong to the conversation: saved when they change, restored when it is opened."""

from __future__ import annotations

from pages import open_page
from streamlit.testing.v1 import AppTest

import ui.model
import ui.state
from glm_client import Message, ToolCall
from glm_client.testing import ScriptedClient


def chat_settings(app: AppTest) -> tuple[str, float, int]:
    return (
        app.sidebar.text_area(key="chat_system_prompt").value,
        app.sidebar.slider(key="chat_temperature").value,
        app.sidebar.slider(key="chat_max_new_tokens").value,
    )


def french_conversation(app: AppTest, page_model: ScriptedClient) -> str:
    page_model.queue("Bonjour !")
    app.sidebar.text_area(key="chat_system_prompt").set_value("Always answer in French.")
    app.sidebar.slider(key="chat_temperature").set_value(0.0)
    app.sidebar.slider(key="chat_max_new_tokens").set_value(32)
    app.chat_input(key="chat_input").set_value("Hello").run()
    (summary,) = ui.state.conversation_store().list("chat")
    return summary.id


def test_a_reload_restores_the_conversations_settings_and_the_next_message_keeps_them(page_model):
    conversation_id = french_conversation(open_page(), page_model)
    reloaded = open_page(c=conversation_id)  # F5: a new session with the id in the URL
    assert chat_settings(reloaded) == ("Always answer in French.", 0.0, 32)
    page_model.queue("Ça va bien.")
    reloaded.chat_input(key="chat_input").set_value("How are you?").run()
    messages, _, params = page_model.requests[-1]
    assert messages[0].content == "Always answer in French."
    assert params["temperature"] == 0.0 and params["max_new_tokens"] == 32
    stored = ui.state.conversation_store().load(conversation_id)
    assert stored.params["system_prompt"] == "Always answer in French." and stored.params["max_new_tokens"] == 32


def test_a_change_is_saved_without_sending_a_message(page_model):
    app = open_page()
    conversation_id = french_conversation(app, page_model)
    app.sidebar.slider(key="chat_temperature").set_value(0.5).run()
    assert ui.state.conversation_store().load(conversation_id).params["temperature"] == 0.5
    assert chat_settings(open_page(c=conversation_id))[1] == 0.5


def test_switching_conversations_never_carries_settings_across(page_model):
    app = open_page()
    french_id = french_conversation(app, page_model)
    app.sidebar.button(key="chat_new").click().run()
    defaults = ("You are a helpful, concise assistant.", 0.8, 512)
    assert chat_settings(app) == defaults  # a new conversation starts from the page's defaults
    page_model.queue("Hi!")
    app.chat_input(key="chat_input").set_value("Hello again").run()
    app.sidebar.button(key=f"chat_open_{french_id}").click().run()
    assert chat_settings(app) == ("Always answer in French.", 0.0, 32)
    (other,) = [s for s in ui.state.conversation_store().list("chat") if s.id != french_id]
    app.sidebar.button(key=f"chat_open_{other.id}").click().run()
    assert chat_settings(app) == defaults


def test_the_tool_pages_own_settings_are_restored(page_model):
    page_model.queue("No tool needed.")
    app = open_page("tool.py")
    app.sidebar.selectbox(key="tool_force").set_value("calculator")
    app.sidebar.toggle(key="tool_manual").set_value(False)
    app.chat_input(key="tool_input").set_value("2+2?").run()
    (summary,) = ui.state.conversation_store().list("tool")
    reloaded = open_page("tool.py", c=summary.id)
    assert reloaded.sidebar.selectbox(key="tool_force").value == "calculator"


def test_an_unknown_link_says_so_and_opens_a_new_conversation(page_model):
    app = open_page(c="0" * 32)
    assert [warning.value for warning in app.warning] == [
        "That link names no conversation here (it was deleted, or is from another app): this is a new one."
    ]
    assert "c" not in app.query_params and ui.state.conversation_store().list() == []


def test_manual_mode_marks_an_unanswered_call_when_a_new_message_is_sent(page_model):
    page_model.queue([ToolCall("get_current_weather", {"location": "Paris"}, id="w1")], "Sure.")
    app = open_page("tool.py")
    app.sidebar.toggle(key="tool_manual").set_value(True).run()
    app.chat_input(key="tool_input").set_value("Weather in Paris?").run()
    app.chat_input(key="tool_input").set_value("Never mind, tell a joke").run()
    sent = page_model.requests[-1][0]
    assert [m.role for m in sent[1:]] == ["user", "assistant", "observation", "user"]
    assert sent[3] == Message.observation(
        "No result was given: the user wrote a new message instead.",
        name="get_current_weather",
        tool_call_id="w1",
        is_error=True,
    )
