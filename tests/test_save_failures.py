"""Saving while a reply streams: every token shown is in the store, and a failing store never ends a turn.

bench/bench_faults.py found both: a SIGKILL lost up to half a second of shown tokens (drafts were
throttled to one write per 0.5 s), and a full disk or a PostgreSQL restart mid-reply ended the turn
with Streamlit's "This app has encountered an error", a dead Stop button and the reply unsaved.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from pages import open_page

import ui.model
from glm_client import Done, Message, TextDelta
from glm_client.testing import ScriptedClient
from store import BackgroundDraftWriter, open_store
from store.sqlite import SqliteStore


def stored_messages(data_dir: Path) -> list[Message]:
    store = open_store(None, data_dir)
    try:
        summaries = store.list()
        conversation = store.load(summaries[0].id) if summaries else None
        return conversation.messages if conversation is not None else []
    finally:
        store.close()


class Disk:
    """Makes every SQLite write fail as a full disk does while `full` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.failures = 0
        for name in ("create", "put_message", "truncate", "set_params"):
            original = getattr(SqliteStore, name)
            monkeypatch.setattr(SqliteStore, name, self._failing(original))

    def _failing(self, original):
        def write(store, *args, **kwargs):
            if self.full:
                self.failures += 1
                raise sqlite3.OperationalError("database or disk is full")
            return original(store, *args, **kwargs)

        return write


class PausedModel(ScriptedClient):
    """Streams `count` words, then holds the next one (a token in flight) until released."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.paused = threading.Event()
        self.release = threading.Event()

    def stream(self, messages, tools=None, *, cancel=None, **params):
        for n in range(self.count):
            time.sleep(0.002)
            yield TextDelta(f"word{n} ")
        self.paused.set()  # the page has drawn (and handed to its draft) every word before asking for more
        while not self.release.wait(0.05):
            if cancel is not None and cancel.is_set():
                break
        yield Done("stop")


def test_every_streamed_token_is_in_the_store_at_once(monkeypatch, isolated_data_dir):
    """A crash now would lose only the token in flight: the draft holds every word the page has."""
    model = PausedModel(40)
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: model)
    app = open_page("chat.py")
    turn = threading.Thread(target=lambda: app.chat_input(key="chat_input").set_value("Tell me").run(), daemon=True)
    turn.start()
    try:
        assert model.paused.wait(60), "the model never got to its pause"
        everything = "".join(f"word{n} " for n in range(40))
        deadline = time.monotonic() + 3
        while (messages := stored_messages(isolated_data_dir))[-1:] and messages[-1].content != everything:
            assert time.monotonic() < deadline, f"the store lags the page: {messages[-1].content!r}"
            time.sleep(0.02)
        assert messages[-1].role == "assistant" and messages[-1].meta["interrupted"] is True
    finally:
        model.release.set()
        turn.join(60)
    reply = stored_messages(isolated_data_dir)[-1]
    assert reply.content == everything and "interrupted" not in reply.meta  # the final message replaced the draft


class FillsTheDisk(ScriptedClient):
    """Fills the disk as it starts answering."""

    def __init__(self, disk: Disk, replies: list) -> None:
        super().__init__(replies)
        self.disk = disk
        self.fill = True

    def stream(self, *args, **kwargs):
        self.disk.full = self.fill
        yield from super().stream(*args, **kwargs)


def test_a_full_disk_mid_reply_is_reported_the_reply_goes_on_and_is_saved_once_there_is_space(
    monkeypatch, isolated_data_dir
):
    disk = Disk(monkeypatch)
    model = FillsTheDisk(disk, ["Once upon a time, the disk filled up.", "Second answer."])
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: model)
    app = open_page("chat.py")
    app.chat_input(key="chat_input").set_value("Tell me").run()

    assert not app.exception  # was: "database or disk is full" ended the turn
    assert disk.failures > 0
    shown = [(m.name, " ".join(md.value for md in m.markdown)) for m in app.chat_message]
    assert shown == [("user", "Tell me"), ("assistant", "Once upon a time, the disk filled up.")]
    assert any("Saving failed: the disk is full" in toast.value for toast in app.toast)
    assert [w.value for w in app.warning if "not everything in this conversation is saved" in w.value.lower()]
    assert [m.role for m in stored_messages(isolated_data_dir)] == ["system", "user"]

    disk.full, model.fill = False, False  # space is back
    app.chat_input(key="chat_input").set_value("Again").run()
    assert not app.exception
    assert not [w.value for w in app.warning if "saved" in w.value]
    messages = stored_messages(isolated_data_dir)
    assert [(m.role, m.content) for m in messages[1:]] == [
        ("user", "Tell me"),
        ("assistant", "Once upon a time, the disk filled up."),
        ("user", "Again"),
        ("assistant", "Second answer."),
    ]
    assert "interrupted" not in messages[2].meta


def test_a_background_draft_that_failed_is_written_once_the_store_works(monkeypatch, tmp_path):
    disk = Disk(monkeypatch)
    store = open_store(None, tmp_path)
    conversation_id = store.create("chat")
    writer = BackgroundDraftWriter(store, conversation_id, 0, retry_s=0.05)
    try:
        disk.full = True
        writer.update(Message.assistant("Once upon"))
        deadline = time.monotonic() + 5
        while writer.error is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        disk.full = False  # no newer draft comes: the failed one is tried again
        while (loaded := store.load(conversation_id)) is None or not loaded.messages:
            assert time.monotonic() < deadline, "the failed draft was never written"
            time.sleep(0.01)
        assert loaded.messages[0].content == "Once upon" and writer.error is None
    finally:
        writer.close()
    store.put_message(conversation_id, 0, Message.assistant("Once upon a time."))
    time.sleep(0.2)  # a closed writer writes nothing more
    assert store.load(conversation_id).messages[0].content == "Once upon a time."  # type: ignore[union-attr]
    store.close()
