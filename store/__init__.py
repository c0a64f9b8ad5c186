"""Conversation persistence: every mode's messages, saved as they happen.

    from store import open_store, DraftWriter
    store = open_store(os.environ.get("DATABASE_URL"), data_dir)
    conversation_id = store.create("chat")
    store.put_message(conversation_id, 0, Message.user("Hi"))

SQLite in the data directory by default; PostgreSQL when DATABASE_URL names one.
This package never imports streamlit.
"""

from __future__ import annotations

from pathlib import Path

from store.base import (
    Conversation,
    ConversationNotFound,
    ConversationStore,
    ConversationSummary,
    derive_title,
    describe_store_failure,
    is_conversation_id,
    is_store_failure,
    new_conversation_id,
)
from store.draft import BackgroundDraftWriter, DraftWriter
from store.export import from_openai_json, to_markdown, to_openai_json
from store.images import ImageFiles
from store.postgres import PostgresStore
from store.sqlite import SqliteStore

SQLITE_FILE = "conversations.sqlite3"
ACCEPTED_URLS = "empty (SQLite in the data directory), sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"

__all__ = [
    "BackgroundDraftWriter",
    "Conversation",
    "ConversationNotFound",
    "ConversationStore",
    "ConversationSummary",
    "DraftWriter",
    "derive_title",
    "describe_store_failure",
    "from_openai_json",
    "is_conversation_id",
    "is_store_failure",
    "new_conversation_id",
    "open_store",
    "to_markdown",
    "to_openai_json",
]


def open_store(database_url: str | None, data_dir: Path) -> ConversationStore:
    """The store DATABASE_URL names; images always go to `data_dir / "images"`.

    Raises ValueError naming DATABASE_URL and the accepted forms for anything else.
    """
    images = ImageFiles(Path(data_dir) / "images")
    url = (database_url or "").strip()
    if not url:
        return SqliteStore(Path(data_dir) / SQLITE_FILE, images)
    scheme, separator, rest = url.partition("://")
    if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
        # Like SQLAlchemy: sqlite:///relative/path, sqlite:////absolute/path.
        return SqliteStore(Path(rest[1:]), images)
    if scheme in ("postgresql", "postgres") and separator:
        return PostgresStore(url, images)
    shown = f"{scheme}://" if separator else "no scheme"  # never echo the rest: it may hold a password
    raise ValueError(f"DATABASE_URL must be {ACCEPTED_URLS}; got {shown}.")
