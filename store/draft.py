"""Save a reply while it streams, so a stop or a crash keeps what was generated."""

from __future__ import annotations

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
