"""What `client.stream()` yields: text as it arrives, parsed tool calls, notices, and a final Done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from glm_client.messages import ToolCall

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


@dataclass
class TextDelta:
    """Visible reply text, in order; concatenating all deltas gives the reply."""

    text: str


@dataclass
class ReasoningDelta:
    """The model's thinking (a `<think>` block, or a server's reasoning field), apart from the reply."""

    text: str


@dataclass
class ToolCallStart:
    """The model has begun writing a call (the page shows "calling tool…" until the ToolCall)."""

    name: str


@dataclass
class ToolCallProgress:
    """The model is still writing the call announced last: `tokens` of it so far.

    A call's text streams as no other event, so without these a page would hear nothing
    for as long as the model writes (a minute on a busy CPU): it could neither show
    progress nor, in Streamlit, act on a Stop click or a closed tab until the call ended.
    """

    tokens: int


@dataclass
class Notice:
    """Something the user should know that is not part of the reply (e.g. history was trimmed)."""

    message: str


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    """Seconds to first token, total seconds, and decode speed after the first token."""

    ttft_s: float = 0.0
    total_s: float = 0.0
    decode_tokens_per_s: float = 0.0


@dataclass
class Done:
    finish_reason: FinishReason
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    error: str | None = None
    # What the model wrote before parsing (the prompt inspector shows it): the decoded text
    # the parser read, or an OpenAI server's streamed chunks, one JSON line each.
    raw: str = ""


Event = TextDelta | ReasoningDelta | ToolCallStart | ToolCallProgress | ToolCall | Notice | Done
