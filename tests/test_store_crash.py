"""A process killed mid-stream leaves its partial reply in the store, marked interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from store import open_store

ROOT = Path(__file__).resolve().parent.parent

# Streams a reply forever, saving drafts the way the pages do, until it is killed.
STREAMING_APP = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from glm_client.messages import Message
from store import DraftWriter, open_store

store = open_store(None, Path(sys.argv[1]))
if "streamlit" in sys.modules:
    sys.exit("the store must not import streamlit")
conversation_id = store.create("chat")
store.put_message(conversation_id, 0, Message.user("Tell me a long story"))
print(conversation_id, flush=True)
writer = DraftWriter(store, conversation_id, 1, min_interval_s=0.02)
reply = Message.assistant()
for n in range(10**9):
    reply.content += f"word{n} "
    if writer.update(reply):
        print("draft", flush=True)
    time.sleep(0.001)
"""


@pytest.mark.timeout(120)
def test_partial_reply_survives_sigkill(tmp_path: Path) -> None:
    app = subprocess.Popen(
        [sys.executable, "-c", STREAMING_APP, str(tmp_path), str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        conversation_id = app.stdout.readline().strip()  # type: ignore[union-attr]
        drafts = sum(app.stdout.readline() == "draft\n" for _ in range(5))  # type: ignore[union-attr]
        assert drafts == 5, app.stderr.read()  # type: ignore[union-attr]
    finally:
        app.kill()  # SIGKILL mid-stream: no finally, no atexit, no clean close
        app.wait(timeout=30)
    assert app.returncode == -signal.SIGKILL

    store = open_store(None, tmp_path)  # the restarted app
    conversation = store.load(conversation_id)
    store.close()
    assert conversation is not None
    question, reply = conversation.messages
    assert question.content == "Tell me a long story"
    assert reply.role == "assistant" and reply.content.startswith("word0 word1 ")
    assert reply.meta["interrupted"] is True
    assert conversation.title == "Tell me a long story"
