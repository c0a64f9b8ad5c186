"""Chat mode: a plain conversation with the model, streamed, stoppable, regenerable."""

from __future__ import annotations

from glm_client.agent import run_turn
from ui.page import ModePage

page = ModePage("chat", {"system_prompt": "You are a helpful, concise assistant."})
params = page.sidebar_settings()
page.keep_settings()
page.show_history("💬 Chat")

prompt = page.chat_input("Message the model")
if prompt is not None and prompt.strip():
    page.add_user_message(prompt)

page.respond(
    lambda on_message, cancel: run_turn(page.client, page.messages, cancel=cancel, on_message=on_message, **params)
)
