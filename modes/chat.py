"""Chat mode: a plain conversation with the model, streamed, stoppable, regenerable."""

from __future__ import annotations

from ui.page import ModePage
from ui.prompts import CHAT_SYSTEM_PROMPT

page = ModePage("chat", {"system_prompt": CHAT_SYSTEM_PROMPT})
params = page.sidebar_settings()
page.keep_settings()
page.show_history("💬 Chat")

prompt = page.chat_input("Message the model")
if prompt is not None and prompt.strip():
    page.add_user_message(prompt)

page.respond(page.start_turn(**params))
