"""The model switcher on the pages: each conversation picks its model in the sidebar, every reply
records the model that wrote it, and "Regenerate with…" answers again with another one.

Two scripted models behind a real ModelPool (its loader injected), so what each says is exact.
"""

from __future__ import annotations

import dataclasses

import pytest

import ui.model
import ui.state
from glm_client import Settings
from glm_client.models import ModelPool, ModelSpec
from glm_client.testing import ScriptedClient
from tests.pages import open_page


@pytest.fixture
def models(monkeypatch) -> dict[str, ScriptedClient]:
    clients = {"alpha": ScriptedClient(), "beta": ScriptedClient()}
    loads: list[str] = []

    def load(settings: Settings, _progress) -> ScriptedClient:
        loads.append(settings.openai_model)
        return clients[settings.openai_model]

    specs = tuple(ModelSpec(name, "openai", base_url="http://127.0.0.1:9/v1", model=name) for name in clients)
    pool = ModelPool(dataclasses.replace(Settings.from_env(), models=specs), load)
    monkeypatch.setattr(ui.model, "pool", lambda: pool)
    clients["loads"] = loads  # type: ignore[assignment]
    return clients


def conversation_id(at) -> str:
    value = at.query_params["c"]
    return value[0] if isinstance(value, list) else value


def conversation(at):
    return ui.state.conversation_store().load(conversation_id(at))


def replies(at) -> list[tuple[str, str]]:
    return [(m.content, m.meta["model"]) for m in conversation(at).messages if m.role == "assistant"]


def test_each_reply_records_its_model_and_regenerate_with_switches(models):
    models["alpha"].queue("Alpha speaking.")
    models["beta"].queue("Beta speaking.", "Beta again.")
    at = open_page("chat.py")
    picker = at.sidebar.selectbox(key="chat_model")
    assert picker.options == ["alpha", "beta"] and picker.value == "alpha"

    at.chat_input[0].set_value("Who are you?").run()
    at.sidebar.selectbox(key="chat_model").set_value("beta").run()
    at.chat_input[0].set_value("And now?").run()
    assert replies(at) == [("Alpha speaking.", "alpha"), ("Beta speaking.", "beta")]
    assert [caption.value for caption in at.caption if caption.value in ("`alpha`", "`beta`")] == ["`alpha`", "`beta`"]

    # "Regenerate with…" offers the other model; its answer replaces the last reply, and it goes on.
    assert not [button for button in at.button if button.key == "chat_regenerate_with_beta"]
    models["alpha"].queue("Alpha once more.")
    at.button(key="chat_regenerate_with_alpha").click().run()
    assert replies(at) == [("Alpha speaking.", "alpha"), ("Alpha once more.", "alpha")]
    assert at.sidebar.selectbox(key="chat_model").value == "alpha"
    assert conversation(at).params["model"] == "alpha"
    assert models["loads"] == ["alpha", "beta"]  # each loaded once, on first use


def test_a_reopened_conversation_keeps_its_model_and_one_gone_falls_back_with_a_note(models):
    models["beta"].queue("Beta speaking.")
    at = open_page("chat.py")
    at.sidebar.selectbox(key="chat_model").set_value("beta").run()
    at.chat_input[0].set_value("Hi").run()
    opened = conversation_id(at)

    reopened = open_page("chat.py", c=opened)
    assert reopened.sidebar.selectbox(key="chat_model").value == "beta"
    assert not [c for c in reopened.caption if "not among the models" in c.value]

    store = ui.state.conversation_store()
    store.set_params(opened, {**store.load(opened).params, "model": "retired-model"})
    fallback = open_page("chat.py", c=opened)
    assert fallback.sidebar.selectbox(key="chat_model").value == "alpha"
    notes = [c.value for c in fallback.caption if "not among the models" in c.value]
    assert notes == [
        "This conversation was answered by `retired-model`, which is not among the models now; it goes on with `alpha`."
    ]
