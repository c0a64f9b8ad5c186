"""Save a reply while it streams, so a stop or a crash keeps what was generated."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from glm_client.messages import Message
from store.base import ConversationStore


class DraftWriter:
    """Writes a growing message to one position, at most every `min_interval_s`.

    Each draft is stored with meta `interrupted=True` and `streaming=True`: if the
    process dies before `finish`, that is exactly what a restart should show.
    """

    def __init__(self, store: ConversationStore, conversation_id: str, index: int, min_interval_s: float = 0.5) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.index = index
        self.min_interval_s = min_interval_s
        self._last_write = float("-inf")

    def update(self, message: Message) -> bool:
        """Save a draft unless one was saved less than `min_interval_s` ago; True if it wrote."""
        now = time.monotonic()
        if now - self._last_write < self.min_interval_s:
            return False
        draft = replace(message, meta={**message.meta, "interrupted": True, "streaming": True})
        self.store.put_message(self.conversation_id, self.index, draft)
        self._last_write = now
        return True

    def finish(self, message: Message) -> None:
        """Save the final message as it is (interrupted only if its own meta says so)."""
        meta = {key: value for key, value in message.meta.items() if key != "streaming"}
        self.store.put_message(self.conversation_id, self.index, replace(message, meta=meta))


class BackgroundDraftWriter:
    """Keeps the newest draft of a streaming message in the store, written on a thread of its own.

    `update` only hands the message over, so the stream never waits for the store. The thread
    writes the newest draft as soon as the write before it is done (drafts in between are
    skipped), so a crash loses only what arrived during one write: the token in flight, not the
    half second a throttle would. A failed write (a full disk, a database restarting) is kept in
    `error` and tried again, with the newest draft, `retry_s` later; a write that works clears it.
    """

    def __init__(self, store: ConversationStore, conversation_id: str, index: int, retry_s: float = 0.5) -> None:
        self._writer = DraftWriter(store, conversation_id, index, min_interval_s=0.0)
        self.retry_s = retry_s
        self.error: Exception | None = None
        self._pending: Message | None = None
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="draft-writer", daemon=True)
        self._thread.start()

    def update(self, message: Message) -> None:
        """Make `message` the draft to write next (the caller must not change it afterwards)."""
        with self._changed:
            self._pending = message
            self._changed.notify()

    def close(self) -> None:
        """Stop: waits for the write in progress, so no draft lands after what the caller writes next."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._pending is None and not self._closed:
                    self._changed.wait()
                message = self._pending
                if self._closed or message is None:
                    return
                self._pending = None
            try:
                self._writer.update(message)
                self.error = None
            except Exception as error:  # whatever the store raises: a draft must never end the stream
                self.error = error
                retry_at = time.monotonic() + self.retry_s
                with self._changed:
                    if self._pending is None:
                        self._pending = message  # nothing newer came: this one is tried again
                    while not self._closed and (left := retry_at - time.monotonic()) > 0:
                        self._changed.wait(left)
