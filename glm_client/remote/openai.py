"""A model behind an OpenAI-compatible HTTP server: vLLM, llama.cpp's server, OpenAI, or this project's own.

Speaks the chat-completions API with httpx (streamed server-sent events) and turns
the stream into the same events a local model yields. Every failure - server down,
timeout, HTTP error, a malformed stream - ends the stream with `Done("error")` and
one readable sentence, after whatever text had already arrived.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx

from glm_client.client import ModelInfo, PromptView, StreamingClient
from glm_client.config import ConfigError, GenerationParams
from glm_client.dialects.base import ToolSchema
from glm_client.events import (
    Done,
    Event,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCallProgress,
    ToolCallStart,
    Usage,
)
from glm_client.messages import Message, ToolCall

READ_TIMEOUT_S = 120.0  # between two bytes of the reply, not for the whole reply
INFO_TIMEOUT_S = 5.0  # the model list is asked for at load time; a dead server shouldn't hang the app
OPENAI_HOST = "api.openai.com"  # the one server known to reject vLLM's extra sampling fields

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


class StreamError(Exception):
    """The server's stream said it failed, or could not be read; the message is for the user."""


class OpenAIClient(StreamingClient):
    """A `Client` for a model served over the OpenAI chat-completions API at `base_url` (ending in /v1)."""

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        model: str = "",
        timeout: float = READ_TIMEOUT_S,
        thinking_switch: bool = False,
    ) -> None:
        """`thinking_switch`: the served template takes `enable_thinking`, so pages offer the switch."""
        self.base_url = base_url.rstrip("/")  # for requests only: it may carry user:password@
        self.shown_url = redact_url(self.base_url)  # for every message, repr and ModelInfo
        self.model = model
        self.timeout = timeout
        self.thinking_switch = thinking_switch
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self._send_extensions = urlparse(self.base_url).hostname != OPENAI_HOST
        self._served_model = ""
        self._info: ModelInfo | None = None

    def __repr__(self) -> str:
        return f"OpenAIClient({self.shown_url!r}, model={self.model!r})"

    @property
    def info(self) -> ModelInfo:
        """Asked of the server on first use (GET /models), so creating a client costs no request."""
        if self._info is None:
            self._info = self._fetch_info()
        return self._info

    def close(self) -> None:
        self._http.close()

    def stream(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        *,
        cancel: threading.Event | None = None,
        **params: Any,
    ) -> Iterator[Event]:
        try:
            body = self.request_body(messages, tools, **params)
        except ConfigError as error:
            yield Done("error", error=str(error))
            return
        reply = ReplyAssembler()
        chunks: list[str] = []  # as streamed, for the prompt inspector
        try:
            with self._http.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    yield Done("error", error=self._status_error(response), raw=response.text[:10_000])
                    return
                for data in sse_data(response.iter_lines()):
                    chunks.append(data)
                    if data.strip() == "[DONE]":
                        reply.ended = True
                        break
                    yield from reply.feed(self._parse_chunk(data))
                    if cancel is not None and cancel.is_set():
                        break  # leaving the block closes the connection: the server stops generating
        except (httpx.HTTPError, StreamError) as error:
            message = str(error) if isinstance(error, StreamError) else self._transport_error(error)
            message = message.replace(self.base_url, self.shown_url)  # httpx may quote the URL
            yield Done("error", reply.usage(), reply.timings(), message, "\n".join(chunks))
            return
        raw = "\n".join(chunks)
        if cancel is not None and cancel.is_set():
            yield Done("cancelled", reply.usage(), reply.timings(), raw=raw)
        elif not reply.ended:
            message = f"The model server at {self.shown_url} ended the stream before the reply was finished."
            yield Done("error", reply.usage(), reply.timings(), message, raw)
        else:
            calls = reply.tool_calls()
            yield from calls
            yield Done(reply.finish_reason(bool(calls)), reply.usage(), reply.timings(), raw=raw)

    def render_prompt(
        self, messages: list[Message], tools: list[ToolSchema] | None = None, **params: Any
    ) -> PromptView:
        """The request as `stream` sends it; the API key shows as `***`. The server counts the tokens."""
        request = {
            "POST": f"{self.shown_url}/chat/completions",
            "headers": {"Authorization": "Bearer ***"} if "authorization" in self._http.headers else {},
            "body": self.request_body(messages, tools, **params),
        }
        return PromptView(json.dumps(request, indent=2, ensure_ascii=False), None, None)

    def request_body(self, messages: list[Message], tools: list[ToolSchema] | None = None, **params: Any) -> dict:
        """The chat-completions request for these messages; raises ConfigError for a bad parameter."""
        force_tool = params.pop("force_tool", None)
        enable_thinking = params.pop("enable_thinking", None)
        GenerationParams.from_kwargs(**params)  # the same names and ranges as a local model
        body: dict[str, Any] = {
            "model": self._model_name(),
            "messages": [self._request_message(message) for message in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        given = {name: value for name, value in params.items() if value is not None}
        for name in ("temperature", "top_p", "seed"):
            if name in given:
                body[name] = given[name]
        if "max_new_tokens" in given:
            body["max_tokens"] = given["max_new_tokens"]
        if given.get("stop"):
            body["stop"] = [given["stop"]] if isinstance(given["stop"], str) else list(given["stop"])
        if "repetition_penalty" in given and self._send_extensions:
            body["repetition_penalty"] = given["repetition_penalty"]
        if enable_thinking is not None and self._send_extensions:  # vLLM and SGLang pass these to the template
            body["chat_template_kwargs"] = {"enable_thinking": bool(enable_thinking)}
        if tools:
            body["tools"] = tools
        if force_tool:
            body["tool_choice"] = (
                "required" if force_tool == "any" else {"type": "function", "function": {"name": force_tool}}
            )
        return body

    def _request_message(self, message: Message) -> dict[str, Any]:
        """A message as sent; OpenAI itself gets no `reasoning_content` (other servers hand it to the template)."""
        out = message.to_openai()
        if not self._send_extensions:
            out.pop("reasoning_content", None)
        return out

    # --- model info -----------------------------------------------------------------------
    def _fetch_info(self) -> ModelInfo:
        """Name and context length from GET /models; when that fails, the configured name."""
        entry: dict[str, Any] = {}
        try:
            response = self._http.get(f"{self.base_url}/models", timeout=INFO_TIMEOUT_S)
            response.raise_for_status()
            models = [model for model in response.json().get("data") or [] if isinstance(model, dict)]
            entry = next((model for model in models if model.get("id") == self.model), models[0] if models else {})
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        self._served_model = str(entry.get("id") or "")
        return ModelInfo(
            name=self.model or self._served_model or "unknown model",
            backend="openai",
            dialect="server",
            device=urlparse(self.shown_url).netloc or self.shown_url,
            dtype="remote",
            context_length=int(entry.get("max_model_len") or 0),
            thinking_switch=self.thinking_switch,
        )

    def _model_name(self) -> str:
        """The model to ask for; if the server was down at start, ask it again now."""
        if not self.model and not self._served_model:
            self._info = self._fetch_info()
        return self.model or self._served_model or "default"

    # --- errors ---------------------------------------------------------------------------
    def _parse_chunk(self, data: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise StreamError(f"The model server at {self.shown_url} sent a malformed stream event: {data[:80]!r}.")
        if chunk.get("error"):
            raise StreamError(f"The model server failed during the reply: {_error_text(chunk)}")
        return chunk

    def _status_error(self, response: httpx.Response) -> str:
        detail = _error_text(_json_or_none(response)) or response.text.strip()[:200] or response.reason_phrase
        code = response.status_code
        if code == 401:
            return (
                f"The model server at {self.shown_url} refused the API key (HTTP 401): {detail} Check OPENAI_API_KEY."
            )
        if code == 404:
            return (
                f"The model server at {self.shown_url} answered HTTP 404: {detail} "
                "Check that OPENAI_BASE_URL ends in /v1 and that OPENAI_MODEL names a served model."
            )
        return f"The model server at {self.shown_url} answered HTTP {code}: {detail}"

    def _transport_error(self, error: httpx.HTTPError) -> str:
        if isinstance(error, httpx.TimeoutException):
            return f"The model server at {self.shown_url} did not answer within {self.timeout:g} s."
        if isinstance(error, httpx.ConnectError):
            reason = "connection refused" if "refused" in str(error).lower() else str(error) or "connection failed"
            return f"Cannot reach the model server at {self.shown_url}: {reason}."
        return f"The connection to the model server at {self.shown_url} broke: {error or type(error).__name__}."


@dataclass
class _PendingCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ReplyAssembler:
    """Stream chunks in, events out; tool-call fragments are joined and emitted at the end."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.deltas = 0  # chunks that carried reply content: the token count when the server gives no usage
        self.ended = False
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._calls: dict[int, _PendingCall] = {}

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
            self._usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        events: list[Event] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            # vLLM since late 2025 sends `reasoning`; older vLLM, SGLang and DeepSeek `reasoning_content`.
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                events.append(ReasoningDelta(reasoning))
            if delta.get("content"):
                events.append(TextDelta(delta["content"]))
            for part in delta.get("tool_calls") or []:
                events += self._call_part(part.get("index", 0), part.get("id"), part.get("function") or {})
            if delta.get("function_call"):
                events += self._call_part(0, None, delta["function_call"])
            if reasoning or delta.get("content") or delta.get("tool_calls") or delta.get("function_call"):
                self._note_delta()
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self.ended = True  # some servers close without [DONE] after the finish reason
        return events

    def tool_calls(self) -> list[ToolCall]:
        return [_to_call(pending) for _index, pending in sorted(self._calls.items())]

    def finish_reason(self, made_calls: bool) -> FinishReason:
        return "tool_calls" if made_calls else _FINISH_REASONS.get(self._finish or "stop", "stop")

    def usage(self) -> Usage:
        return self._usage or Usage(completion_tokens=self.deltas)

    def timings(self) -> Timings:
        now = time.perf_counter()
        if self.first_at is None:
            return Timings(total_s=now - self.started)
        tokens = self.usage().completion_tokens
        decode_time = (self.last_at or now) - self.first_at
        speed = (tokens - 1) / decode_time if tokens > 1 and decode_time > 0 else 0.0
        return Timings(ttft_s=self.first_at - self.started, total_s=now - self.started, decode_tokens_per_s=speed)

    def _note_delta(self) -> None:
        self.last_at = time.perf_counter()
        self.first_at = self.first_at or self.last_at
        self.deltas += 1

    def _call_part(self, index: int, call_id: str | None, function: dict[str, Any]) -> list[Event]:
        pending = self._calls.setdefault(index, _PendingCall())
        pending.id = pending.id or call_id
        events: list[Event] = []
        if function.get("name") and not pending.name:
            pending.name = function["name"]
            events.append(ToolCallStart(pending.name))
        if function.get("arguments"):
            arguments = function["arguments"]
            pending.arguments.append(arguments if isinstance(arguments, str) else json.dumps(arguments))
            if pending.name:  # announced: the page hears the call grow (a server sends a chunk a token or so)
                events.append(ToolCallProgress(len(pending.arguments)))
        return events


def _to_call(pending: _PendingCall) -> ToolCall:
    text = "".join(pending.arguments)
    extra: dict[str, Any] = {"id": pending.id} if pending.id else {}  # the server's id, else a new one
    try:
        arguments = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        problem = f"its arguments are not valid JSON ({error})"
    else:
        if isinstance(arguments, dict):
            return ToolCall(pending.name, arguments, **extra)
        problem = "its arguments are not a JSON object"
    return ToolCall(
        pending.name, raw=text, parse_error=f"The call to {pending.name} could not be read: {problem}.", **extra
    )


def redact_url(url: str) -> str:
    """`url` with any `user:password@` replaced by `***@`, for showing; other parts kept."""
    parts = urlparse(url)
    if "@" not in parts.netloc:
        return url
    return urlunparse(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event (multi-line data joined with newlines; comments skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(body: Any) -> str:
    """The message of an error body: OpenAI's {"error": {"message"}}, vLLM's {"message"}, FastAPI's {"detail"}."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
    elif isinstance(error, str):
        message = error
    else:
        message = body.get("message") or body.get("detail")
    text = str(message or "").strip()
    return text if not text or text.endswith((".", "!", "?")) else text + "."
