"""The store written once in SQL that SQLite and PostgreSQL both speak.

A backend only says how to open a transaction (`_transaction`) and which
placeholder it uses; queries, schema and image bookkeeping live here, so both
backends keep the same contract.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from glm_client.messages import Message
from store.base import (
    Conversation,
    ConversationNotFound,
    ConversationStore,
    ConversationSummary,
    is_conversation_id,
    new_conversation_id,
    title_from_text,
)
from store.images import ImageFiles

# run(sql, params) executes one statement with `?` placeholders and returns its rows ([] when none).
Run = Callable[..., list[tuple[Any, ...]]]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        mode TEXT NOT NULL,
        title TEXT NOT NULL,
        title_folded TEXT NOT NULL,
        params TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    # body: Message.to_dict() as JSON with images replaced by their file hashes.
    # search_text: casefolded in Python, so search ignores case the same way in every backend and locale.
    """CREATE TABLE IF NOT EXISTS messages (
        conversation_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        role TEXT NOT NULL,
        body TEXT NOT NULL,
        search_text TEXT NOT NULL,
        PRIMARY KEY (conversation_id, position)
    )""",
    # Which message uses which image file: a file is deleted when its last row goes.
    """CREATE TABLE IF NOT EXISTS message_images (
        conversation_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        digest TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS message_images_by_message ON message_images (conversation_id, position)",
    "CREATE INDEX IF NOT EXISTS message_images_by_digest ON message_images (digest)",
    "CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations (updated_at)",
)

SUMMARY_COLUMNS = """c.id, c.mode, c.title, c.created_at, c.updated_at,
    (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)"""


class SqlStore(ConversationStore):
    schema_prelude: tuple[str, ...] = ()  # statements run before the schema in the same transaction

    def __init__(self, images: ImageFiles) -> None:
        self.images = images
        self._last_time = 0.0
        with self._transaction() as run:
            for statement in (*self.schema_prelude, *SCHEMA):
                run(statement)

    @abstractmethod
    def _transaction(self, write: bool = True) -> AbstractContextManager[Run]:
        """A transaction, serialised with this store's other calls; commits on success."""

    # --- writes -----------------------------------------------------------------------
    def create(self, mode: str, title: str = "", conversation_id: str | None = None) -> str:
        conversation_id = conversation_id or new_conversation_id()
        if not is_conversation_id(conversation_id):
            raise ValueError(f"A conversation id is 32 lowercase hex digits, not {conversation_id!r}.")
        title = _clean_title(title)
        with self._transaction() as run:
            now = self._now()
            run(
                "INSERT INTO conversations (id, mode, title, title_folded, params, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, mode, title, _fold(title), "{}", now, now),
            )
        return conversation_id

    def put_message(self, conversation_id: str, index: int, message: Message) -> None:
        if index < 0:
            raise ValueError(f"Message index must be 0 or more, not {index}.")
        # Files first: a committed row never points at an image that is not on disk yet.
        digests = [self.images.save(image) for image in message.images]
        body = replace(message, images=[]).to_dict()
        body["image_digests"] = digests
        with self._transaction() as run:
            title = self._touch(run, conversation_id)
            run(
                "INSERT INTO messages (conversation_id, position, role, body, search_text) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (conversation_id, position) DO UPDATE"
                " SET role = excluded.role, body = excluded.body, search_text = excluded.search_text",
                (conversation_id, index, message.role, _json(body), _search_text(message)),
            )
            where = "conversation_id = ? AND position = ?"
            replaced = [
                row[0] for row in run(f"SELECT digest FROM message_images WHERE {where}", (conversation_id, index))
            ]
            if replaced or digests:
                run(f"DELETE FROM message_images WHERE {where}", (conversation_id, index))
                for digest in digests:
                    run(
                        "INSERT INTO message_images (conversation_id, position, digest) VALUES (?, ?, ?)",
                        (conversation_id, index, digest),
                    )
            if not title and message.role == "user":
                self._set_title(run, conversation_id, title_from_text(message.content))
        self._remove_unused(set(replaced) - set(digests))

    def truncate(self, conversation_id: str, length: int) -> None:
        with self._transaction() as run:
            self._touch(run, conversation_id)
            digests = self._drop_messages(run, conversation_id, from_position=max(length, 0))
        self._remove_unused(digests)

    def rename(self, conversation_id: str, title: str) -> None:
        with self._transaction() as run:
            self._touch(run, conversation_id)
            title = _clean_title(title)
            if not title:
                first_user = run(
                    "SELECT body FROM messages WHERE conversation_id = ? AND role = 'user' ORDER BY position LIMIT 1",
                    (conversation_id,),
                )
                title = title_from_text(json.loads(first_user[0][0])["content"]) if first_user else ""
            self._set_title(run, conversation_id, title)

    def delete(self, conversation_id: str) -> None:
        with self._transaction() as run:
            digests = self._drop_messages(run, conversation_id, from_position=0)
            run("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        self._remove_unused(digests)

    def set_params(self, conversation_id: str, params: dict[str, Any]) -> None:
        with self._transaction() as run:
            self._touch(run, conversation_id)
            run("UPDATE conversations SET params = ? WHERE id = ?", (_json(params), conversation_id))

    # --- reads ------------------------------------------------------------------------
    def list(self, mode: str | None = None, search: str | None = None, limit: int = 100) -> list[ConversationSummary]:
        where: list[str] = []
        params: list[Any] = []
        if mode:
            where.append("c.mode = ?")
            params.append(mode)
        if search and search.strip():
            where.append(
                "(c.title_folded LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m"
                " WHERE m.conversation_id = c.id AND m.search_text LIKE ? ESCAPE '\\'))"
            )
            pattern = _like_pattern(search.strip())
            params += [pattern, pattern]
        sql = f"SELECT {SUMMARY_COLUMNS} FROM conversations c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.updated_at DESC, c.id LIMIT ?"
        with self._transaction(write=False) as run:
            rows = run(sql, (*params, limit))
        return [ConversationSummary(*row) for row in rows]

    def load(self, conversation_id: str) -> Conversation | None:
        with self._transaction(write=False) as run:
            found = run(
                "SELECT id, mode, title, params, created_at, updated_at FROM conversations WHERE id = ?",
                (conversation_id,),
            )
            if not found:
                return None
            bodies = run("SELECT body FROM messages WHERE conversation_id = ? ORDER BY position", (conversation_id,))
        id_, mode, title, params, created_at, updated_at = found[0]
        messages = [self._decode(body) for (body,) in bodies]
        return Conversation(id_, mode, title, messages, json.loads(params), created_at, updated_at)

    # --- helpers ----------------------------------------------------------------------
    def _now(self) -> float:
        # Strictly increasing within this store, so "newest first" is stable even for writes in one clock tick.
        self._last_time = max(time.time(), self._last_time + 1e-6)
        return self._last_time

    def _touch(self, run: Run, conversation_id: str) -> str:
        """Bump updated_at (locking the row) and return the title; raise if the conversation is gone."""
        rows = run(
            "UPDATE conversations SET updated_at = ? WHERE id = ? RETURNING title", (self._now(), conversation_id)
        )
        if not rows:
            raise ConversationNotFound(f"No conversation with id {conversation_id!r}; it may have been deleted.")
        return rows[0][0]

    def _set_title(self, run: Run, conversation_id: str, title: str) -> None:
        title = _clean_title(title)
        run("UPDATE conversations SET title = ?, title_folded = ? WHERE id = ?", (title, _fold(title), conversation_id))

    def _drop_messages(self, run: Run, conversation_id: str, from_position: int) -> set[str]:
        """Delete the messages from `from_position` on and their image rows; returns the image hashes they used."""
        scope, params = "conversation_id = ? AND position >= ?", (conversation_id, from_position)
        digests = {row[0] for row in run(f"SELECT digest FROM message_images WHERE {scope}", params)}
        run(f"DELETE FROM message_images WHERE {scope}", params)
        run(f"DELETE FROM messages WHERE {scope}", params)
        return digests

    def _remove_unused(self, digests: Iterable[str]) -> None:
        """Delete image files that no message refers to any more.

        Runs after the commit; a file another conversation saved with identical bytes at
        that very moment could lose its file (the message then loads without it).
        """
        digests = sorted(digests)
        if not digests:
            return
        marks = ", ".join("?" for _ in digests)
        with self._transaction(write=False) as run:
            used = {
                row[0] for row in run(f"SELECT DISTINCT digest FROM message_images WHERE digest IN ({marks})", digests)
            }
        for digest in digests:
            if digest not in used:
                self.images.remove(digest)

    def _decode(self, body: str) -> Message:
        data = json.loads(body)
        digests = data.pop("image_digests", [])
        message = Message.from_dict(data)
        message.images = [image for image in map(self.images.load, digests) if image is not None]
        return message


def _json(value: Any) -> str:
    # default=str: an odd value in meta or params must never stop a conversation from being saved.
    return json.dumps(value, ensure_ascii=False, default=str)


def _fold(text: str) -> str:
    return text.casefold().replace("\x00", "")  # PostgreSQL text cannot hold NUL


def _search_text(message: Message) -> str:
    calls = (f"{call.name} {_json(call.arguments)}" for call in message.tool_calls)
    return _fold("\n".join((message.content, *calls)))


def _clean_title(title: str) -> str:
    return " ".join(title.replace("\x00", "").split())


def _like_pattern(search: str) -> str:
    escaped = _fold(search).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
