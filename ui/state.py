"""Per-browser-session state: each mode keeps its own conversation."""

from __future__ import annotations

import streamlit as st

from glm_client import Message


def conversation(mode: str) -> list[Message]:
    """The conversation of this mode in this browser session (mutated in place by the agent)."""
    conversations = st.session_state.setdefault("conversations", {})
    return conversations.setdefault(mode, [])


def clear(mode: str) -> None:
    conversation(mode).clear()


def drop_last_reply(messages: list[Message]) -> bool:
    """Remove everything after the last user message, for Regenerate; False if there is none."""
    last_user = max((index for index, message in enumerate(messages) if message.role == "user"), default=None)
    if last_user is None:
        return False
    del messages[last_user + 1 :]
    return True


def set_system_prompt(messages: list[Message], text: str) -> None:
    """Keep the sidebar's system prompt as the first message (none when blank)."""
    has_system = bool(messages) and messages[0].role == "system"
    if not text.strip():
        if has_system:
            del messages[0]
    elif has_system:
        messages[0].content = text
    else:
        messages.insert(0, Message.system(text))
