"""Writing one reply in the OpenAI chat-completions format: a whole completion, or stream chunks.

`ReplyWriter` is fed the client's events in order. For a streamed reply each event
becomes zero or more `chat.completion.chunk` objects as it arrives; for a plain
reply `completion()` gives the `chat.completion` object at the end.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from glm_client.events import Done, Event, ReasoningDelta, TextDelta, ToolCallStart
from glm_client.messages import ToolCall

# Our finish reasons to OpenAI's; a stopped (cancelled) reply ended, as far as the caller knows.
_FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "cancelled": "stop"}


def error_body(
    message: str, error_type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error object: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def usage_dict(done: Done | None) -> dict[str, int]:
    usage = done.usage if done is not None else None
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def call_arguments(call: ToolCall) -> str:
    """The arguments as the JSON string OpenAI sends; a call the model garbled keeps its raw text."""
    if call.parse_error:
        return call.raw or ""
    return json.dumps(call.arguments, ensure_ascii=False)


class ReplyWriter:
    """One reply's OpenAI objects. `legacy` answers with `function_call` (one call) instead of `tool_calls`."""

    def __init__(self, model: str, legacy: bool = False) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.legacy = legacy
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ToolCall] = []
        self.done: Done | None = None
        self._announced = 0  # stream indexes opened by ToolCallStart, given a name and an id

    def add(self, event: Event) -> list[dict[str, Any]]:
        """Record the event; returns the stream chunks it makes (none for Done and notices)."""
        if isinstance(event, TextDelta):
            self.text.append(event.text)
            return [self._chunk({"content": event.text})] if event.text else []
        if isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
            # Both names: `reasoning_content` for older clients (SGLang, DeepSeek), `reasoning` for newer vLLM.
            return [self._chunk({"reasoning_content": event.text, "reasoning": event.text})] if event.text else []
        if isinstance(event, ToolCallStart):
            self._announced += 1
            return self._call_delta(self._announced - 1, name=event.name, arguments="")
        if isinstance(event, ToolCall):
            self.calls.append(event)
            index = len(self.calls) - 1
            arguments = call_arguments(event)
            if index < self._announced:  # its name and id went out with the ToolCallStart
                return self._call_delta(index, arguments=arguments)
            self._announced = index + 1
            return self._call_delta(index, name=event.name, arguments=arguments, call_id=event.id)
        if isinstance(event, Done):
            self.done = event
        return []

    # --- stream chunks --------------------------------------------------------------------
    def first_chunk(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def finish_chunk(self) -> dict[str, Any]:
        return self._chunk({}, finish_reason=self.finish_reason())

    def usage_chunk(self) -> dict[str, Any]:
        """The extra last chunk of `stream_options.include_usage`: no choices, only usage."""
        return {**self._envelope("chat.completion.chunk"), "choices": [], "usage": usage_dict(self.done)}

    # --- whole completion -----------------------------------------------------------------
    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.reasoning:
            message["reasoning_content"] = message["reasoning"] = "".join(self.reasoning)
        if self.calls and self.legacy:
            call = self.calls[0]
            message["function_call"] = {"name": call.name, "arguments": call_arguments(call)}
        elif self.calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call_arguments(call)}}
                for call in self.calls
            ]
        elif message["content"] is None:
            message["content"] = ""
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason()}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": usage_dict(self.done)}

    def finish_reason(self) -> str:
        if self.calls:
            return "function_call" if self.legacy else "tool_calls"
        return _FINISH_REASONS.get(self.done.finish_reason if self.done else "stop", "stop")

    # --- helpers ----------------------------------------------------------------------------
    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice]}

    def _call_delta(
        self, index: int, *, arguments: str, name: str | None = None, call_id: str | None = None
    ) -> list[dict[str, Any]]:
        function: dict[str, Any] = {"arguments": arguments}
        if name is not None:
            function = {"name": name, **function}
        if self.legacy:  # the legacy format carries a single call
            return [self._chunk({"function_call": function})] if index == 0 else []
        call: dict[str, Any] = {"index": index, "function": function}
        if name is not None:
            call = {"index": index, "id": call_id or "call_" + uuid.uuid4().hex[:16], "type": "function", **call}
        return [self._chunk({"tool_calls": [call]})]
