"""The conversation each mode shows, kept in the store as it happens.

A browser session holds one open conversation per mode; its id is in the URL
(`?c=…`), so a reload, or a restart of the app, opens the same conversation again.
A new conversation has its id from the start (its working directory is named after it),
but nothing is written until its first message: opening a page creates no empty rows.

Each message is written once it is final, at its own position: the user's when it is
sent, a turn's as the turn reports them (`save_message`), so what is saved never
depends on the order things are appended in. The sidebar's settings are saved with
the conversation whenever they change (`keep_settings`).

A save the store cannot take (a full disk, a database restarting) does not stop the page:
what was not saved stays in this page and is written, in order, at the next save or the
next run of the page, which says so until then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from glm_client import Message
from store import (
    BackgroundDraftWriter,
    ConversationStore,
    describe_store_failure,
    is_conversation_id,
    is_store_failure,
    new_conversation_id,
    open_store,
)
from ui.model import settings

log = logging.getLogger(__name__)

QUERY_KEY = "c"
MODE_TITLES = {"chat": "Chat", "tool": "Tool", "code_interpreter": "Code Interpreter"}


@st.cache_resource(show_spinner=False)
def conversation_store() -> ConversationStore:
    """One store per process, shared by all sessions (it is thread-safe)."""
    current = settings()
    return open_store(current.database_url, current.data_dir)


@dataclass
class OpenConversation:
    mode: str
    id: str = field(default_factory=new_conversation_id)
    messages: list[Message] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # the settings it was last saved with
    stored: bool = False  # whether the store has a row for it yet
    # What the store has not taken yet (it failed): written by the next flush, truncation first.
    unsaved: dict[int, Message] = field(default_factory=dict)
    truncate_at: int | None = None
    params_unsaved: bool = False
    save_error: str = ""  # why the last save failed, in words; "" once everything is saved

    def _ensure_stored(self) -> ConversationStore:
        store = conversation_store()
        if not self.stored:
            store.create(self.mode, conversation_id=self.id)
            self.stored = True
            self.params_unsaved = bool(self.params)
            st.query_params[QUERY_KEY] = self.id
        return store

    @property
    def pending(self) -> bool:
        return bool(self.unsaved) or self.truncate_at is not None or self.params_unsaved

    def flush(self) -> bool:
        """Write what is not saved yet; False while the store fails (the reason in `save_error`)."""
        try:
            store = self._ensure_stored()
            if self.params_unsaved:
                store.set_params(self.id, self.params)
                self.params_unsaved = False
            if self.truncate_at is not None:
                store.truncate(self.id, self.truncate_at)
                self.truncate_at = None
            for index in sorted(self.unsaved):
                store.put_message(self.id, index, self.unsaved[index])
                del self.unsaved[index]
        except Exception as error:
            if not is_store_failure(error):
                raise
            log.warning("Saving conversation %s failed: %s", self.id, error)
            self.save_error = describe_store_failure(error)
            return False
        self.save_error = ""
        return True

    def add(self, message: Message) -> None:
        """Append a finished message (the user's, a typed tool result) and save it.

        The first message brings the settings' system prompt in before it.
        """
        first = not self.messages
        self.messages.append(message)
        if first and self.set_system_prompt(self.params.get("system_prompt", "")):
            self.save_all()
        else:
            self.save_message(len(self.messages) - 1, message)

    def save_message(self, index: int, message: Message) -> bool:
        """Save the message at `index` as it is now: run_turn's `on_message` for a turn's messages.

        False when the store failed: the message is kept and written by the next save.
        """
        self.unsaved[index] = message
        return self.flush()

    def save_all(self) -> None:
        """Rewrite every message (positions shifted: a system prompt added or removed)."""
        self.unsaved = dict(enumerate(self.messages))
        self._truncate(len(self.messages))
        self.flush()

    def _truncate(self, length: int) -> None:
        self.unsaved = {index: message for index, message in self.unsaved.items() if index < length}
        self.truncate_at = length if self.truncate_at is None else min(self.truncate_at, length)

    def draft_writer(self) -> BackgroundDraftWriter:
        """Saves the reply being streamed, at the position it will have, so a crash keeps it (all but
        the token in flight). Earlier unsaved messages are written first; while the store fails, the
        writer keeps trying (its `error` says why)."""
        self.flush()
        return BackgroundDraftWriter(conversation_store(), self.id, len(self.messages))

    def keep_settings(self, values: dict[str, Any]) -> None:
        """Remember the sidebar's settings, saving them when they changed (in the store once it has the conversation)."""
        if values == self.params:
            return
        self.params = dict(values)
        if self.stored:
            self.params_unsaved = True
            self.flush()
        if "system_prompt" in values and self.set_system_prompt(values["system_prompt"]) and self.stored:
            self.save_all()

    def set_system_prompt(self, text: str) -> bool:
        """Keep the system prompt as the first message (none when blank); True if the messages changed."""
        messages = self.messages
        has_system = bool(messages) and messages[0].role == "system"
        if not messages or (has_system and text.strip() == messages[0].content):
            return False  # an empty conversation gets its system prompt with its first message
        if not text.strip():
            if not has_system:
                return False
            del messages[0]
        elif has_system:
            messages[0].content = text
        else:
            messages.insert(0, Message.system(text))
        return True

    def drop_last_reply(self) -> bool:
        """Remove everything after the last user message, for Regenerate; False if there is none."""
        last_user = max((index for index, message in enumerate(self.messages) if message.role == "user"), default=None)
        if last_user is None:
            return False
        del self.messages[last_user + 1 :]
        if self.stored:
            self._truncate(len(self.messages))
            self.flush()
        return True


def current(mode: str) -> OpenConversation:
    """This mode's open conversation, following the URL's `?c=` when it names one of this mode."""
    conversations: dict[str, OpenConversation] = st.session_state.setdefault("open_conversations", {})
    wanted = st.query_params.get(QUERY_KEY)
    open_now = conversations.get(mode)
    if wanted and (open_now is None or open_now.id != wanted):
        loaded = conversation_store().load(wanted) if is_conversation_id(wanted) else None
        if loaded is None:
            st.warning(
                "That link names no conversation here (it was deleted, or is from another app): this is a new one."
            )
        elif loaded.mode != mode:
            st.warning(
                f"That link is to a {MODE_TITLES.get(loaded.mode, loaded.mode)} conversation: open it on that page."
            )
        else:
            open_now = OpenConversation(mode, loaded.id, loaded.messages, loaded.params, stored=True)
            conversations[mode] = open_now
    if open_now is None:
        open_now = conversations[mode] = OpenConversation(mode)
    if open_now.pending and not open_now.flush():
        st.warning(
            f"Not everything in this conversation is saved: {open_now.save_error}. It is kept in this page "
            "and saved as soon as the store works again (try again with any action).",
            icon="💾",
        )
    if open_now.stored:
        st.query_params[QUERY_KEY] = open_now.id
    elif QUERY_KEY in st.query_params:
        del st.query_params[QUERY_KEY]
    return open_now


def open_conversation(mode: str, conversation_id: str | None) -> None:
    """Switch this mode to a stored conversation (None: a new, empty one). Safe in a widget callback."""
    st.session_state.setdefault("open_conversations", {}).pop(mode, None)
    if conversation_id is None:
        st.query_params.pop(QUERY_KEY, None)
    else:
        st.query_params[QUERY_KEY] = conversation_id


def request_answer(mode: str) -> None:
    """The user asked for an answer (sent a message, Regenerate): the page answers on this run or the next."""
    st.session_state[f"{mode}_answer_requested"] = True


def should_answer(mode: str, messages: list[Message]) -> bool:
    """Whether the page answers the last message (the user's, or typed tool results) now: only when asked.

    A conversation that merely ends in a user message (imported, or reopened after a crash)
    never starts generation, let alone code, on its own: it gets an Answer button.
    """
    requested = st.session_state.pop(f"{mode}_answer_requested", False)
    if not messages or messages[-1].role not in ("user", "observation"):
        return False
    if requested:
        return True
    st.info("The last message has no answer yet.")
    return st.button("▶️ Answer it", key=f"{mode}_answer")
