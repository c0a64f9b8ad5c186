"""Turning a stream of token ids into a stream of text, and cutting it at stop strings."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class IncrementalDecoder:
    """Text deltas from token ids, one token at a time.

    Decoding a token alone loses the space SentencePiece attaches to words and
    splits multi-byte characters, so each step decodes a short window that starts
    a few tokens back and emits only what is new and complete.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token: int) -> str:
        self._ids.append(token)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (e.g. an incomplete character at the very end)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]


class StopStrings:
    """Holds back text that might begin a stop string; reports when one is complete."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text that is safe to show; after a stop string, nothing more."""
        if not self._stops:
            return text
        if self.stopped:
            return ""
        self._pending += text
        hits = [index for index in (self._pending.find(stop) for stop in self._stops) if index >= 0]
        if hits:
            self.stopped = True
            safe, self._pending = self._pending[: min(hits)], ""
            return safe
        keep = max((_overlap(self._pending, stop) for stop in self._stops), default=0)
        safe, self._pending = self._pending[: len(self._pending) - keep], self._pending[len(self._pending) - keep :]
        return safe

    def flush(self) -> str:
        pending, self._pending = self._pending, ""
        return "" if self.stopped else pending


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a beginning of `stop`."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-size:]):
            return size
    return 0
