"""The conversation store interface and the plain data it returns.

Every page saves through a `ConversationStore`: SQLite by default, PostgreSQL when
DATABASE_URL names one. Messages are written one position at a time
(`put_message`), so a reply being streamed can be saved as it grows and a
restarted app finds whatever was last written.
"""

from __future__ import annotations

import builtins
import errno
import re
import sqlite3
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from glm_client.messages import Message

TITLE_LENGTH = 60
_CONVERSATION_ID = re.compile(r"[0-9a-f]{32}")


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def is_conversation_id(text: str) -> bool:
    """Whether `text` has the shape of a conversation id (it names folders: nothing else may pass)."""
    return _CONVERSATION_ID.fullmatch(text) is not None


class ConversationNotFound(LookupError):
    """Raised when writing to a conversation that does not exist (deleted meanwhile)."""


def is_store_failure(error: BaseException) -> bool:
    """Whether `error` is the store's medium failing (a full disk, a database down or restarting), not a bug.

    Such a failure passes: the caller keeps what it could not save and tries again later.
    """
    if isinstance(error, OSError | sqlite3.OperationalError):  # OSError: image files, ConnectionError
        return True
    # psycopg is optional: its OperationalError (connection lost, server shutting down) by name.
    return any(k.__name__ == "OperationalError" and k.__module__.startswith("psycopg") for k in type(error).__mro__)


def describe_store_failure(error: BaseException) -> str:
    """A store failure in words fit for a page: no paths, hosts or user names."""
    text = str(error).lower()
    if getattr(error, "errno", None) == errno.ENOSPC or "disk is full" in text or "no space left" in text:
        return "the disk is full"
    if isinstance(error, sqlite3.OperationalError):
        return f"the database failed ({error})"  # SQLite's messages name no path: "database is locked"
    return "the database cannot be reached"


@dataclass
class ConversationSummary:
    """One row of the sidebar's list. Times are seconds since the epoch."""

    id: str
    mode: str
    title: str
    created_at: float
    updated_at: float
    message_count: int


@dataclass
class Conversation:
    id: str
    mode: str
    title: str
    messages: list[Message] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


class ConversationStore(ABC):
    """Where conversations live. Safe to share between threads (Streamlit sessions)."""

    @abstractmethod
    def create(self, mode: str, title: str = "", conversation_id: str | None = None) -> str:
        """Start an empty conversation; returns its id (`conversation_id`, or a new uuid4 hex string).

        A caller may choose the id beforehand (the app names a new conversation's working
        directory before its first message is saved).
        """

    @abstractmethod
    def list(self, mode: str | None = None, search: str | None = None, limit: int = 100) -> list[ConversationSummary]:
        """Newest first; `search` matches title and message text, ignoring case."""

    @abstractmethod
    def load(self, conversation_id: str) -> Conversation | None:
        """The whole conversation with its images, or None if there is no such id."""

    @abstractmethod
    def put_message(self, conversation_id: str, index: int, message: Message) -> None:
        """Insert or replace the message at `index` (0-based).

        An empty title is derived from the first user message written.
        Raises ConversationNotFound when the conversation does not exist.
        """

    @abstractmethod
    def truncate(self, conversation_id: str, length: int) -> None:
        """Drop every message from position `length` on (Regenerate, Clear)."""

    @abstractmethod
    def rename(self, conversation_id: str, title: str) -> None:
        """Set the title; a blank title is derived from the first user message again."""

    @abstractmethod
    def delete(self, conversation_id: str) -> None:
        """Remove the conversation and the image files no other message uses."""

    @abstractmethod
    def set_params(self, conversation_id: str, params: dict[str, Any]) -> None:
        """Replace the conversation's saved parameters (sampling, system prompt, ...)."""

    @abstractmethod
    def close(self) -> None:
        """Release the database connection."""

    def create_from(
        self, mode: str, messages: builtins.list[Message], title: str = "", params: dict[str, Any] | None = None
    ) -> str:
        """A new conversation holding `messages` (an import, a copy); returns its id."""
        conversation_id = self.create(mode, title)
        for index, message in enumerate(messages):
            self.put_message(conversation_id, index, message)
        if params:
            self.set_params(conversation_id, params)
        return conversation_id


def derive_title(messages: list[Message]) -> str:
    """The first line of the first user message, cut to about TITLE_LENGTH characters."""
    for message in messages:
        if message.role == "user":
            return title_from_text(message.content)
    return ""


def title_from_text(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"
