"""The conversation each mode shows, kept in the store as it happens.

A browser session holds one open conversation per mode; its id is in the URL
(`?c=…`), so a reload, or a restart of the app, opens the same conversation again.
Nothing is written until the first message: opening a page creates no empty rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from glm_client import Message
from store import ConversationStore, DraftWriter, open_store
from ui.model import settings

QUERY_KEY = "c"


@st.cache_resource(show_spinner=False)
def conversation_store() -> ConversationStore:
    """One store per process, shared by all sessions (it is thread-safe)."""
    current = settings()
    return open_store(current.database_url, current.data_dir)


@dataclass
class OpenConversation:
    mode: str
    id: str | None = None
    messages: list[Message] = field(default_factory=list)
    saved: int = 0  # messages[:saved] are in the store as they are now

    def save(self) -> None:
        """Write what changed: new messages, and the last saved one (its meta may have grown)."""
        if not self.messages:
            return
        store = conversation_store()
        if self.id is None:
            self.id = store.create(self.mode)
            st.query_params[QUERY_KEY] = self.id
        for index in range(max(self.saved - 1, 0), len(self.messages)):
            store.put_message(self.id, index, self.messages[index])
        if self.saved == 0:  # a full rewrite: drop rows beyond the end (e.g. a removed system prompt)
            store.truncate(self.id, len(self.messages))
        self.saved = len(self.messages)

    def set_system_prompt(self, text: str) -> None:
        """Keep the sidebar's system prompt as the first message (none when blank)."""
        messages = self.messages
        has_system = bool(messages) and messages[0].role == "system"
        if has_system and text.strip() == messages[0].content:
            return
        if not text.strip():
            if not has_system:
                return
            del messages[0]
        elif has_system:
            messages[0].content = text
        else:
            messages.insert(0, Message.system(text))
        self.saved = 0  # positions shifted or the first message changed: rewrite all

    def draft_writer(self) -> DraftWriter | None:
        """Saves the reply being streamed (at index len(messages)) so a crash keeps it."""
        self.save()
        return DraftWriter(conversation_store(), self.id, len(self.messages)) if self.id else None

    def save_params(self, params: dict[str, Any]) -> None:
        if self.id is not None:
            conversation_store().set_params(self.id, params)


def current(mode: str) -> OpenConversation:
    """This mode's open conversation, following the URL's `?c=` when it names one of this mode."""
    conversations: dict[str, OpenConversation] = st.session_state.setdefault("open_conversations", {})
    wanted = st.query_params.get(QUERY_KEY)
    open_now = conversations.get(mode)
    if wanted and (open_now is None or open_now.id != wanted):
        loaded = conversation_store().load(wanted)
        if loaded is not None and loaded.mode == mode:
            open_now = OpenConversation(mode, loaded.id, loaded.messages, saved=len(loaded.messages))
            conversations[mode] = open_now
    if open_now is None:
        open_now = conversations[mode] = OpenConversation(mode)
    if open_now.id is not None:
        st.query_params[QUERY_KEY] = open_now.id
    elif QUERY_KEY in st.query_params:
        del st.query_params[QUERY_KEY]
    return open_now


def open_conversation(mode: str, conversation_id: str | None) -> None:
    """Switch this mode to a stored conversation (None: a new, empty one)."""
    conversations = st.session_state.setdefault("open_conversations", {})
    conversations.pop(mode, None)
    if conversation_id is None:
        st.query_params.pop(QUERY_KEY, None)
    else:
        st.query_params[QUERY_KEY] = conversation_id


def request_answer(mode: str) -> None:
    """The user asked for an answer (sent a message, Regenerate): the page answers on this run or the next."""
    st.session_state[f"{mode}_answer_requested"] = True


def should_answer(mode: str, messages: list[Message]) -> bool:
    """Whether the page answers the last (user) message now: only when this session asked for it.

    A conversation that merely ends in a user message (imported, or reopened after a crash)
    never starts generation, let alone code, on its own: it gets an Answer button.
    """
    requested = st.session_state.pop(f"{mode}_answer_requested", False)
    if not messages or messages[-1].role != "user":
        return False
    if requested:
        return True
    st.info("The last message has no answer yet.")
    return st.button("▶️ Answer it", key=f"{mode}_answer")


def drop_last_reply(conversation: OpenConversation) -> bool:
    """Remove everything after the last user message, for Regenerate; False if there is none."""
    messages = conversation.messages
    last_user = max((index for index, message in enumerate(messages) if message.role == "user"), default=None)
    if last_user is None:
        return False
    del messages[last_user + 1 :]
    if conversation.id is not None:
        conversation_store().truncate(conversation.id, len(messages))
    conversation.saved = min(conversation.saved, len(messages))
    return True
