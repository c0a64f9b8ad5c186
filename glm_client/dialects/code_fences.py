"""Python fences in prose run as code: for parsers whose own call syntax is not a fence.

In the Code Interpreter, models asked for code write a ```python block whatever their
native way to call the interpreter (ChatGLM3's `interpreter` metadata, a GLM-4.5 call).
`CodeFences` reads the prose another parser lets through with the fence reader of the
JSON dialect, so every dialect runs the same fences the same way.
"""

from __future__ import annotations

from glm_client.dialects.base import OutputParser
from glm_client.dialects.json_calls import JsonCallParser
from glm_client.events import Event, TextDelta


class CodeFences:
    """An OutputParser: `inner`'s events, with its prose read again for python fences."""

    def __init__(self, inner: OutputParser) -> None:
        self._inner = inner
        self._prose = JsonCallParser(interpreter=True)

    @property
    def ended(self) -> bool:
        return self._inner.ended or self._prose.ended

    def feed(self, text: str) -> list[Event]:
        return self._route(self._inner.feed(text))

    def finish(self) -> list[Event]:
        return self._route(self._inner.finish()) + self._prose.finish()

    def _route(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if isinstance(event, TextDelta):
                out += self._prose.feed(event.text)
            else:  # a call of the inner syntax ends the prose before it
                out += self._prose.finish()
                self._prose = JsonCallParser(interpreter=True)
                out.append(event)
        return out
