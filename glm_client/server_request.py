"""Reading an OpenAI chat-completions request: JSON body in, a checked `ChatRequest` out.

Every problem a caller can cause raises `RequestError` naming the offending field,
which the server turns into a 400 with an OpenAI-style error body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from glm_client.config import ConfigError, GenerationParams
from glm_client.dialects.base import ToolSchema, function_of
from glm_client.messages import Message

# Which request fields become which `client.stream` parameters; max_completion_tokens
# is the newer name of max_tokens, and repetition_penalty is the vLLM extension.
_NUMBER_PARAMS = {"temperature": "temperature", "top_p": "top_p", "repetition_penalty": "repetition_penalty"}
_INTEGER_PARAMS = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens", "seed": "seed"}


class RequestError(ValueError):
    """A request the server cannot answer: one sentence, plus the field it is about."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass
class ChatRequest:
    messages: list[Message]
    tools: list[ToolSchema] | None = None
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments for client.stream
    stream: bool = False
    include_usage: bool = False
    legacy_functions: bool = False  # asked with `functions`: answer with `function_call`


def parse_chat_request(body: bytes) -> ChatRequest:
    """The request in `body`, checked; raises RequestError."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(f"The request body is not valid JSON: {error}.") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    messages = _messages(data.get("messages"))
    if data.get("n") not in (None, 1):
        raise RequestError("Only n=1 is supported: this server generates one choice per request.", "n")
    tools, legacy = _tools(data)
    tools, force_tool = _tool_choice(data, tools, legacy)
    params = _generation_params(data)
    if force_tool:
        params["force_tool"] = force_tool
    stream = _boolean(data, "stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("stream_options must be an object.", "stream_options")
    return ChatRequest(
        messages=messages,
        tools=tools,
        params=params,
        stream=stream,
        include_usage=stream and bool(options.get("include_usage")),
        legacy_functions=legacy,
    )


def _messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list of messages.", "messages")
    messages = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RequestError(f"messages[{index}] must be an object.", f"messages[{index}]")
        if item.get("role") == "assistant" and item.get("function_call") and not item.get("tool_calls"):
            item = {**item, "tool_calls": [{"type": "function", "function": item["function_call"]}]}
        try:
            messages.append(Message.from_openai(item))
        except (ValueError, TypeError, AttributeError) as error:
            raise RequestError(f"messages[{index}]: {error}", f"messages[{index}]") from None
    return messages


def _tools(data: dict[str, Any]) -> tuple[list[ToolSchema] | None, bool]:
    """The offered tools, and whether they came in the legacy `functions` form."""
    if data.get("tools") is not None:
        raw, param = data["tools"], "tools"
        if not isinstance(raw, list) or any(
            not isinstance(tool, dict) or tool.get("type") != "function" for tool in raw
        ):
            raise RequestError('tools must be a list of {"type": "function", "function": {...}} objects.', param)
        tools = raw
    elif data.get("functions") is not None:
        raw, param = data["functions"], "functions"
        if not isinstance(raw, list) or any(not isinstance(function, dict) for function in raw):
            raise RequestError("functions must be a list of function objects.", param)
        tools = [{"type": "function", "function": function} for function in raw]
    else:
        return None, False
    for index, tool in enumerate(tools):
        function = function_of(tool)
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise RequestError(f"{param}[{index}] has no function name.", f"{param}[{index}]")
    return tools or None, param == "functions"


def _tool_choice(
    data: dict[str, Any], tools: list[ToolSchema] | None, legacy: bool
) -> tuple[list[ToolSchema] | None, str | None]:
    """The tools to offer and the `force_tool` value ("any", a tool name, or None)."""
    param = "function_call" if legacy else "tool_choice"
    choice = data.get(param)
    if choice is None or choice == "auto":
        return tools, None
    if choice == "none":
        return None, None  # offering nothing is the surest way to get no call
    if choice == "required" and not legacy:
        if not tools:
            raise RequestError('tool_choice "required" needs at least one tool in tools.', param)
        return tools, "any"
    name = _chosen_name(choice, legacy)
    if name is None:
        expected = '"auto", "none" or {"name": ...}' if legacy else '"auto", "none", "required" or a named function'
        raise RequestError(f"{param} must be {expected}.", param)
    if name not in {function_of(tool)["name"] for tool in tools or []}:
        raise RequestError(f"{param} names the function {name!r}, which is not among the offered tools.", param)
    return tools, name


def _chosen_name(choice: Any, legacy: bool) -> str | None:
    if not isinstance(choice, dict):
        return None
    function = choice if legacy else choice.get("function")
    if not legacy and choice.get("type") != "function":
        return None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else None


def _generation_params(data: dict[str, Any]) -> dict[str, Any]:
    """Only the parameters the caller set: the rest keep the model's defaults."""
    params: dict[str, Any] = {}
    for name, target in _NUMBER_PARAMS.items():
        value = data.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(f"{name} must be a number.", name)
            params[target] = float(value)
    for name, target in _INTEGER_PARAMS.items():
        value = data.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise RequestError(f"{name} must be an integer.", name)
            params[target] = value
    stop = data.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(item, str) for item in stops):
            raise RequestError("stop must be a string or a list of strings.", "stop")
        params["stop"] = [item for item in stops if item]
    try:
        GenerationParams.from_kwargs(**params)  # range checks, with the same sentences as the library
    except ConfigError as error:
        raise RequestError(str(error), _param_named_in(str(error))) from None
    return params


def _param_named_in(message: str) -> str | None:
    for name in (*_NUMBER_PARAMS, "seed"):
        if message.startswith(name):
            return name
    return "max_tokens" if message.startswith("max_new_tokens") else None


def _boolean(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false.", name)
    return value
