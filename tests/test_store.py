"""The store contract, run against SQLite and (where its server is installed) PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres_cluster import PostgresCluster, PostgresUnavailable

from glm_client.messages import INTERPRETER, Message, ToolCall
from store import ConversationNotFound, ConversationStore, DraftWriter, new_conversation_id, open_store


def png(red: int, green: int = 0, blue: int = 0) -> bytes:
    """A valid 1x1 PNG of one colour: distinct colours give distinct files."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, red, green, blue]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def every_kind_of_message() -> list[Message]:
    weather = ToolCall("get_weather", {"city": "Zürich", "days": 2}, id="call_weather", raw='{"city": "Zürich"}')
    code = ToolCall(INTERPRETER, {"code": "import matplotlib\nplot()"}, id="call_code")
    broken = ToolCall("get_weather", {}, id="call_broken", raw="get_weather(", parse_error="unclosed parenthesis")
    answer = Message.assistant("It is sunny. 晴れ")
    answer.meta = {"ttft_s": 0.25, "tokens_per_s": 31.5, "notices": ["Older turns were dropped."]}
    stopped = Message.assistant("Half a sentence and a NUL \x00 from a confused model")
    stopped.meta["interrupted"] = True
    return [
        Message.system("You are helpful."),
        Message.user("What is the weather in Zürich?\nAnd plot it."),
        Message.assistant("Let me check.", [weather]),
        Message.observation('{"sky": "sunny"}', name="get_weather", tool_call_id="call_weather"),
        Message.assistant("", [code]),
        Message.observation(
            "[Image]\n[Image]", name=INTERPRETER, tool_call_id="call_code", images=[png(255), png(0, 255)]
        ),
        Message.assistant("", [broken]),
        Message.observation("Your tool call could not be parsed.", tool_call_id="call_broken", is_error=True),
        answer,
        stopped,
    ]


# --- backends ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresCluster]:
    pytest.importorskip("psycopg", reason="the psycopg package is not installed (pip install 'psycopg[binary]')")
    try:
        server = PostgresCluster()
    except PostgresUnavailable as reason:
        pytest.skip(str(reason))
    yield server
    server.stop()


Opener = Callable[[], ConversationStore]


@pytest.fixture(params=["sqlite", "postgres"])
def open_same(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens another store on one database: a second app process, as far as the database can tell."""
    url = request.getfixturevalue("postgres_server").new_database() if request.param == "postgres" else None
    opened: list[ConversationStore] = []

    def open_() -> ConversationStore:
        opened.append(open_store(url, tmp_path))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_same: Opener) -> ConversationStore:
    return open_same()


# --- the contract -----------------------------------------------------------------------


def test_round_trip_keeps_every_message_kind(store: ConversationStore, tmp_path: Path) -> None:
    messages = every_kind_of_message()
    conversation_id = store.create("code_interpreter")
    for index, message in enumerate(messages):
        store.put_message(conversation_id, index, message)
    store.set_params(conversation_id, {"temperature": 0.7, "system_prompt": "Be brief."})

    loaded = store.load(conversation_id)
    assert loaded is not None
    assert loaded.messages == messages
    assert loaded.mode == "code_interpreter"
    assert loaded.params == {"temperature": 0.7, "system_prompt": "Be brief."}
    assert loaded.title == "What is the weather in Zürich?"  # first line of the first user message
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == sorted(
        f"{hashlib.sha256(image).hexdigest()}.png" for image in messages[5].images
    )


def test_reopening_finds_everything(open_same: Opener) -> None:
    first = open_same()
    conversation_id = first.create("chat")
    first.put_message(conversation_id, 0, Message.user("Remember me"))
    first.close()
    loaded = open_same().load(conversation_id)
    assert loaded is not None and loaded.messages == [Message.user("Remember me")]


def test_put_message_replaces_the_message_at_its_index(store: ConversationStore) -> None:
    conversation_id = store.create("chat", "Fixed title")
    store.put_message(conversation_id, 0, Message.user("Hi"))
    for text in ("Hel", "Hello", "Hello there"):
        store.put_message(conversation_id, 1, Message.assistant(text))
    loaded = store.load(conversation_id)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["Hi", "Hello there"]
    assert loaded.title == "Fixed title"  # a given title is never replaced by the auto-title


def test_list_search_rename_delete(store: ConversationStore) -> None:
    sine = store.create("code_interpreter")
    store.put_message(sine, 0, Message.system("system prompts do not make titles"))
    store.put_message(sine, 1, Message.user("Plot the SINE wave\nfrom 0 to 2π"))
    weather = store.create("tool")
    store.put_message(weather, 0, Message.user("x" * 100))
    store.put_message(weather, 1, Message.assistant("", [ToolCall("get_weather", {"city": "Ümeå"})]))
    empty = store.create("chat")

    assert [s.id for s in store.list()] == [empty, weather, sine]  # newest first
    summaries = {s.id: s for s in store.list()}
    assert summaries[sine].title == "Plot the SINE wave"
    assert summaries[weather].title == "x" * 59 + "…"
    assert summaries[empty].title == ""
    assert (summaries[sine].message_count, summaries[empty].message_count) == (2, 0)
    assert summaries[sine].created_at <= summaries[sine].updated_at

    assert [s.id for s in store.list(mode="tool")] == [weather]
    assert [s.id for s in store.list(search="sine")] == [sine]  # title, any case
    assert [s.id for s in store.list(search="2Π")] == [sine]  # message text, Unicode case
    assert [s.id for s in store.list(search="ümeå")] == [weather]  # tool call arguments
    assert store.list(search="%") == [] and store.list(search="x_x") == []  # LIKE wildcards are literal
    assert [s.id for s in store.list(search="   ")] == [empty, weather, sine]
    assert len(store.list(limit=2)) == 2

    store.rename(sine, "  Sines\nand cosines ")
    assert [s.title for s in store.list(search="cosines")] == ["Sines and cosines"]
    assert store.list()[0].id == sine  # a write makes it the newest
    store.rename(sine, "")
    assert store.list()[0].title == "Plot the SINE wave"  # blank: derived again

    store.delete(weather)
    assert store.load(weather) is None
    assert weather not in {s.id for s in store.list()}
    store.delete(weather)  # deleting twice is harmless


def test_truncate_drops_the_tail(store: ConversationStore) -> None:
    conversation_id = store.create("chat")
    for index, text in enumerate(["one", "two", "three", "four"]):
        store.put_message(conversation_id, index, Message.user(text))
    store.truncate(conversation_id, 2)
    loaded = store.load(conversation_id)
    assert loaded is not None and [m.content for m in loaded.messages] == ["one", "two"]
    store.truncate(conversation_id, 0)
    loaded = store.load(conversation_id)
    assert loaded is not None and loaded.messages == [] and loaded.title == "one"


def test_params_are_replaced(store: ConversationStore) -> None:
    conversation_id = store.create("chat")
    assert store.load(conversation_id).params == {}  # type: ignore[union-attr]
    store.set_params(conversation_id, {"temperature": 0.2, "top_p": 0.9})
    store.set_params(conversation_id, {"temperature": 0.0})
    assert store.load(conversation_id).params == {"temperature": 0.0}  # type: ignore[union-attr]


def test_image_files_live_while_a_message_uses_them(store: ConversationStore, tmp_path: Path) -> None:
    shared, own, replaced = png(1), png(2), png(3)
    first, second = store.create("code_interpreter"), store.create("code_interpreter")
    store.put_message(first, 0, Message.observation("", images=[shared, own]))
    store.put_message(second, 0, Message.observation("", images=[shared]))
    store.put_message(second, 1, Message.observation("", images=[replaced]))
    files = lambda: len(list((tmp_path / "images").glob("*.png")))  # noqa: E731
    assert files() == 3

    store.put_message(second, 1, Message.observation("redrawn", images=[own]))  # `replaced` is used no more
    assert files() == 2
    store.delete(first)
    assert files() == 2  # `shared` and `own` still shown in the second conversation
    store.truncate(second, 1)
    assert files() == 1
    store.delete(second)
    assert files() == 0


def test_writing_to_a_missing_conversation_says_so(store: ConversationStore) -> None:
    assert store.load("no-such-id") is None
    with pytest.raises(ConversationNotFound, match="no-such-id"):
        store.put_message("no-such-id", 0, Message.user("lost?"))
    for write in (lambda: store.truncate("no-such-id", 0), lambda: store.rename("no-such-id", "x")):
        with pytest.raises(ConversationNotFound):
            write()


def test_concurrent_writers(open_same: Opener) -> None:
    """Streamlit sessions write from many threads; other processes hold other connections."""
    stores = [open_same(), open_same()]
    own = [stores[0].create("chat") for _ in range(8)]
    shared = stores[0].create("chat")
    errors: list[BaseException] = []

    def write(store: ConversationStore, conversation_id: str, indexes: range) -> None:
        try:
            for index in indexes:
                store.put_message(conversation_id, index, Message.user(f"{conversation_id} {index}"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(stores[n % 2], own[n], range(50))) for n in range(8)]
    threads += [threading.Thread(target=write, args=(stores[n % 2], shared, range(n, 100, 4))) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for conversation_id in own:
        loaded = stores[1].load(conversation_id)
        assert loaded is not None and [m.content for m in loaded.messages] == [
            f"{conversation_id} {i}" for i in range(50)
        ]
    loaded = stores[1].load(shared)
    assert loaded is not None and [m.content for m in loaded.messages] == [f"{shared} {i}" for i in range(100)]


def test_draft_writer_marks_drafts_interrupted_until_finished(store: ConversationStore) -> None:
    conversation_id = store.create("chat")
    writer = DraftWriter(store, conversation_id, 0, min_interval_s=3600)
    reply = Message.assistant("Once")
    assert writer.update(reply) is True
    reply.content = "Once upon"
    assert writer.update(reply) is False  # too soon: not written
    draft = store.load(conversation_id).messages[0]  # type: ignore[union-attr]
    assert (draft.content, draft.meta) == ("Once", {"interrupted": True, "streaming": True})
    assert reply.meta == {}  # the caller's message is left alone

    reply.content = "Once upon a time."
    writer.finish(reply)
    final = store.load(conversation_id).messages[0]  # type: ignore[union-attr]
    assert (final.content, final.meta) == ("Once upon a time.", {})


def test_sqlite_is_a_wal_file_in_the_data_directory(tmp_path: Path) -> None:
    open_store("", tmp_path).close()
    with sqlite3.connect(tmp_path / "conversations.sqlite3") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_url_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "chats.db"
    store = open_store(f"sqlite:///{path}", tmp_path)
    store.create("chat")
    store.close()
    assert path.exists()


@pytest.mark.parametrize("url", ["mysql://user:secret@db/chats", "sqlite://relative.db", "user:secret@host"])
def test_bad_database_url_says_what_is_accepted(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"DATABASE_URL must be .*sqlite:///PATH or postgresql://") as raised:
        open_store(url, tmp_path)
    assert "secret" not in str(raised.value)


def test_unreachable_postgres_is_one_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="the psycopg package is not installed")
    with pytest.raises(ConnectionError, match="Cannot connect to the PostgreSQL database in DATABASE_URL"):
        open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=3", tmp_path)


def test_postgres_reconnects_when_the_server_closed_its_connection(postgres_server, tmp_path: Path) -> None:
    """A restarted server closes every connection; the store finds out at its next BEGIN and reconnects
    there, so the first save or read after a restart works (it used to fail once, ending a turn)."""
    import psycopg

    store = open_store(postgres_server.new_database(), tmp_path)
    try:
        conversation_id = store.create("chat")
        backend = store._connection.info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:  # as a restart does, to this one
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        store.put_message(conversation_id, 0, Message.user("after the restart"))
        assert [s.id for s in store.list()] == [conversation_id]
        assert store._connection.info.backend_pid != backend  # type: ignore[attr-defined]
    finally:
        store.close()


def test_a_conversation_can_be_created_under_an_id_chosen_beforehand(store: ConversationStore) -> None:
    chosen = new_conversation_id()
    assert store.create("code_interpreter", conversation_id=chosen) == chosen
    assert store.load(chosen).mode == "code_interpreter"
    with pytest.raises(ValueError, match="32 lowercase hex digits"):
        store.create("chat", conversation_id="../elsewhere")


def test_the_store_imports_neither_streamlit_nor_torch() -> None:
    """store/ uses glm_client's data model only: no page framework, no model runtime."""
    heavy = ("streamlit", "torch", "transformers")
    code = f"import sys, store; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    assert result.stdout.strip() == "[]"
