"""A scripted stand-in for a model, for fast and exact tests of pages and the agent loop.

Each call to `stream` plays the next queued reply: a string (streamed in small
chunks) or a list of events (played as given). Every prompt it was asked to
answer is recorded in `requests`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from glm_client.client import ModelInfo, PromptView, StreamingClient
from glm_client.dialects.base import ToolSchema, function_of
from glm_client.events import Done, Event, TextDelta, Usage
from glm_client.messages import Message, ToolCall

Reply = str | list[Event | ToolCall]


class ScriptedClient(StreamingClient):
    def __init__(self, replies: list[Reply] | None = None, chunk_size: int = 3) -> None:
        self.replies: list[Reply] = list(replies or [])
        self.requests: list[tuple[list[Message], list[ToolSchema] | None, dict[str, Any]]] = []
        self.chunk_size = chunk_size
        self.info = ModelInfo(
            name="scripted", backend="scripted", dialect="none", device="cpu", dtype="none", context_length=4096
        )

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def render_prompt(
        self, messages: list[Message], tools: list[ToolSchema] | None = None, **params: Any
    ) -> PromptView:
        """No template: one `<|role|>` line per message, then the tool names, so tests can read it."""
        lines = [f"<|{message.role}|>\n{message.content}" for message in messages]
        if tools:
            lines.append("<|tools|>\n" + ", ".join(function_of(tool)["name"] for tool in tools))
        return PromptView("\n".join(lines), None, None)

    def stream(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        *,
        cancel: threading.Event | None = None,
        **params: Any,
    ) -> Iterator[Event]:
        self.requests.append(([Message.from_dict(m.to_dict()) for m in messages], tools, params))
        reply: Reply = self.replies.pop(0) if self.replies else "(no scripted reply left)"
        if isinstance(reply, str):
            events: list[Event] = [
                TextDelta(reply[i : i + self.chunk_size]) for i in range(0, len(reply), self.chunk_size)
            ]
        else:
            events = list(reply)
        made_call = False
        for event in events:
            if cancel is not None and cancel.is_set():
                yield Done("cancelled")
                return
            made_call = made_call or isinstance(event, ToolCall)
            yield event
        if not any(isinstance(event, Done) for event in events):
            yield Done(
                "tool_calls" if made_call else "stop",
                Usage(prompt_tokens=len(messages), completion_tokens=len(events)),
                raw=reply if isinstance(reply, str) else "",
            )
