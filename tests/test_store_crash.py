"""A process killed mid-stream leaves its partial reply in the store, marked interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glm_client import Message
from store import SQLITE_FILE, open_store

ROOT = Path(__file__).resolve().parent.parent

# The real Chat page (in Streamlit's AppTest) answering with a model that never stops.
STREAMING_APP = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
os.environ["DATA_DIR"] = sys.argv[1]
from streamlit.testing.v1 import AppTest
import ui.model
from glm_client import TextDelta
from glm_client.testing import ScriptedClient

class Endless(ScriptedClient):
    def stream(self, messages, tools=None, *, cancel=None, **params):
        for n in range(10**9):
            time.sleep(0.001)
            yield TextDelta(f"word{n} ")

model = Endless()
ui.model.get_client = lambda _name=None: model
app = AppTest.from_file(os.path.join(sys.argv[2], "modes", "chat.py"), default_timeout=3600)
app.run()
app.chat_input(key="chat_input").set_value("Tell me a long story").run()
"""


def stored_reply(data_dir: Path) -> tuple[str, Message] | None:
    """The conversation's id and its streamed reply, once a draft of it is in the store."""
    store = open_store(None, data_dir)
    try:
        for summary in store.list():
            conversation = store.load(summary.id)
            if conversation is not None and conversation.messages[-1].role == "assistant":
                return summary.id, conversation.messages[-1]
        return None
    finally:
        store.close()


@pytest.mark.timeout(180)
def test_partial_reply_survives_sigkill(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    app = subprocess.Popen(
        [sys.executable, "-c", STREAMING_APP, str(data_dir), str(ROOT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while (found := stored_reply(data_dir) if (data_dir / SQLITE_FILE).exists() else None) is None:
            assert app.poll() is None, app.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no draft was saved"
            time.sleep(0.2)
        time.sleep(1.5)  # a few more drafts
    finally:
        app.kill()  # SIGKILL mid-stream: no finally, no atexit, no clean close
        app.wait(timeout=30)
    assert app.returncode == -signal.SIGKILL

    store = open_store(None, data_dir)  # the restarted app
    conversation = store.load(found[0])
    store.close()
    assert conversation is not None
    system, question, reply = conversation.messages
    assert system.role == "system" and question.content == "Tell me a long story"
    assert reply.role == "assistant" and reply.content.startswith("word0 word1 ")
    assert len(reply.content) > len(found[1].content)  # drafts kept coming until the kill
    assert reply.meta["interrupted"] is True
    assert conversation.title == "Tell me a long story"
