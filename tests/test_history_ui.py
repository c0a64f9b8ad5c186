"""Conversations survive reloads: the store behind the pages, the sidebar list, export and import."""

from __future__ import annotations

import json

from pages import open_page
from streamlit.testing.v1 import AppTest

import ui.model
import ui.state
from glm_client import TextDelta
from glm_client.testing import ScriptedClient


def bubbles(app: AppTest) -> list[str]:
    return [" ".join(md.value for md in message.markdown) for message in app.chat_message]


def test_a_reload_with_the_id_in_the_url_restores_the_conversation(page_model):
    page_model.queue("Paris is the capital.")
    app = open_page()
    app.chat_input(key="chat_input").set_value("Capital of France?").run()
    conversation_id = app.query_params["c"][0] if isinstance(app.query_params["c"], list) else app.query_params["c"]
    stored = ui.state.conversation_store().load(conversation_id)
    assert [m.role for m in stored.messages] == ["system", "user", "assistant"]
    assert stored.title == "Capital of France?"

    reloaded = open_page(c=conversation_id)  # a new browser session, as after a refresh or a restart
    assert not reloaded.exception
    assert bubbles(reloaded) == ["Capital of France?", "Paris is the capital."]


def test_regenerate_replaces_the_stored_reply(page_model):
    page_model.queue("first", "second")
    app = open_page()
    app.chat_input(key="chat_input").set_value("q").run()
    app.button(key="chat_regenerate").click().run()
    (summary,) = ui.state.conversation_store().list("chat")
    stored = ui.state.conversation_store().load(summary.id)
    assert [m.content for m in stored.messages if m.role != "system"] == ["q", "second"]


def test_the_sidebar_lists_searches_and_opens_past_conversations(page_model):
    page_model.queue("about cats", "about dogs")
    app = open_page()
    app.chat_input(key="chat_input").set_value("Tell me about cats").run()
    app.sidebar.button(key="chat_new").click().run()
    app.chat_input(key="chat_input").set_value("Tell me about dogs").run()
    listed = [(b.label.split(" · ", 1)[1], b.proto.type) for b in app.sidebar.button if b.key.startswith("chat_open_")]
    assert listed == [("Tell me about dogs", "primary"), ("Tell me about cats", "secondary")]  # the open one stands out
    assert [caption.value for caption in app.sidebar.caption][:1] == ["Today"]
    app.sidebar.text_input(key="chat_search").input("cats").run()
    matches = [b for b in app.sidebar.button if b.key.startswith("chat_open_")]
    assert [b.label.split(" · ", 1)[1] for b in matches] == ["Tell me about cats"]
    matches[0].click().run()
    assert bubbles(app) == ["Tell me about cats", "about cats"]


def test_rename_export_and_delete(page_model):
    page_model.queue("hello back")
    app = open_page()
    app.chat_input(key="chat_input").set_value("hello").run()
    (summary,) = ui.state.conversation_store().list("chat")
    app.sidebar.text_input(key=f"chat_title_{summary.id}").input("Greetings").run()
    assert ui.state.conversation_store().load(summary.id).title == "Greetings"
    (listed,) = [b.label for b in app.sidebar.button if b.key.startswith("chat_open_")]
    assert listed.endswith(" · Greetings")  # at once, not after the next click
    labels = [button.label for button in app.get("download_button")]
    assert labels == ["⬇️ Export as Markdown", "⬇️ Export as JSON"]
    app.sidebar.button(key="chat_delete").click().run()
    assert ui.state.conversation_store().list("chat") == []
    assert bubbles(app) == []


class StoppedMidStream(ScriptedClient):
    """Streams two deltas, then the user clicks Stop (Streamlit raises StopException into the script)."""

    def stream(self, messages, tools=None, *, cancel=None, **params):
        from streamlit.runtime.scriptrunner_utils.exceptions import StopException

        self.requests.append((messages, tools, params))
        yield TextDelta("partial ")
        yield TextDelta("answer")
        raise StopException()


def test_a_stop_mid_stream_keeps_the_partial_reply_marked_interrupted(monkeypatch):
    page_model = StoppedMidStream()
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: page_model)
    app = open_page()
    app.chat_input(key="chat_input").set_value("talk to me").run()
    (summary,) = ui.state.conversation_store().list("chat")
    stored = ui.state.conversation_store().load(summary.id)
    assert [m.role for m in stored.messages] == ["system", "user", "assistant"]
    assert stored.messages[-1].content == "partial answer" and stored.messages[-1].meta["interrupted"] is True
    reloaded = open_page(c=summary.id)
    assert any("Stopped before the reply was finished" in caption.value for caption in reloaded.caption)


def test_an_imported_json_conversation_opens_in_its_page(page_model):
    document = {
        "title": "Imported chat",
        "messages": [
            {"role": "user", "content": "imported question"},
            {"role": "assistant", "content": "imported answer"},
        ],
    }
    from store import from_openai_json

    title, _mode, messages = from_openai_json(json.dumps(document))
    conversation_id = ui.state.conversation_store().create_from("chat", messages, title=title)
    reopened = open_page(c=conversation_id)
    assert bubbles(reopened) == ["imported question", "imported answer"]
