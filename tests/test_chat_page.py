"""The Chat page end to end in Streamlit's AppTest: a scripted model, then the real one."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui.model
from glm_client.testing import ScriptedClient

PAGE = str(Path(__file__).resolve().parent.parent / "modes" / "chat.py")


@pytest.fixture
def page(monkeypatch):
    client = ScriptedClient()
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: client)
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.run()
    return app, client


def chat_texts(app: AppTest) -> list[tuple[str, str]]:
    return [(message.name, " ".join(md.value for md in message.markdown)) for message in app.chat_message]


def test_a_message_gets_a_streamed_reply_and_both_stay_in_history(page):
    app, client = page
    client.queue("Hello! **Bold** and $x^2$.")
    app.chat_input(key="chat_input").set_value("Hi there").run()
    assert not app.exception
    assert chat_texts(app) == [("user", "Hi there"), ("assistant", "Hello! **Bold** and $x^2$.")]
    sent = client.requests[0][0]
    assert sent[0].role == "system" and sent[-1].content == "Hi there"


def test_sidebar_parameters_reach_the_model(page):
    app, client = page
    client.queue("ok")
    app.sidebar.slider(key="chat_temperature").set_value(0.0)
    app.sidebar.slider(key="chat_max_new_tokens").set_value(64)
    app.sidebar.slider(key="chat_loop_stop_tokens").set_value(0)
    app.sidebar.text_area(key="chat_system_prompt").set_value("Answer like a pirate.")
    app.chat_input(key="chat_input").set_value("hello").run()
    messages, _, params = client.requests[0]
    assert params["temperature"] == 0.0 and params["max_new_tokens"] == 64 and params["loop_stop_tokens"] == 0
    assert params["top_p"] == 0.8 and params["repetition_penalty"] == 1.1
    assert messages[0].content == "Answer like a pirate."


def test_empty_prompt_is_ignored(page):
    app, client = page
    app.chat_input(key="chat_input").set_value("   ").run()
    assert client.requests == [] and chat_texts(app) == []


def test_regenerate_replaces_the_last_reply(page):
    app, client = page
    client.queue("first answer", "second answer")
    app.chat_input(key="chat_input").set_value("question").run()
    app.button(key="chat_regenerate").click().run()
    assert not app.exception
    assert chat_texts(app) == [("user", "question"), ("assistant", "second answer")]
    assert len(client.requests) == 2 and client.requests[1][0][-1].content == "question"


def test_clear_empties_the_conversation(page):
    app, client = page
    client.queue("answer")
    app.chat_input(key="chat_input").set_value("question").run()
    app.button(key="chat_clear").click().run()
    assert chat_texts(app) == []


def test_html_from_the_model_is_shown_not_executed(page):
    app, client = page
    client.queue("<script>alert('x')</script><b>bold?</b>")
    app.chat_input(key="chat_input").set_value("html please").run()
    reply = app.chat_message[1].markdown[0]
    assert reply.value == "\\<script>alert('x')\\</script>\\<b>bold?\\</b>"  # escaped: drawn as text
    assert reply.allow_html is False


def test_model_errors_show_a_message_and_keep_the_question(page):
    from glm_client import Done

    app, client = page
    client.queue([Done("error", error="Connection refused by the model server.")])
    app.chat_input(key="chat_input").set_value("are you there?").run()
    assert not app.exception
    assert [e.value for e in app.error] == ["Connection refused by the model server."]
    assert chat_texts(app)[0] == ("user", "are you there?")


def test_a_model_that_fails_to_load_shows_one_sentence_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "missing-model"))
    ui.model.settings.clear()
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.run()
    ui.model.settings.clear()
    assert not app.exception
    assert "does not exist" in app.error[0].value and "missing-model" in app.error[0].value


@pytest.mark.model
def test_chat_page_with_the_real_embedded_model(monkeypatch):
    monkeypatch.delenv("MODEL_PATH", raising=False)
    ui.model.settings.clear()
    app = AppTest.from_file(PAGE, default_timeout=120)
    app.run()
    app.sidebar.slider(key="chat_temperature").set_value(0.0)
    app.sidebar.slider(key="chat_max_new_tokens").set_value(32)
    app.chat_input(key="chat_input").set_value("What is the capital of France?").run()
    assert not app.exception
    texts = chat_texts(app)
    assert texts[0] == ("user", "What is the capital of France?")
    assert texts[1][0] == "assistant" and "Paris" in texts[1][1]
    assert any("tokens/s" in caption.value for caption in app.sidebar.caption)
