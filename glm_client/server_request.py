"""Reading an OpenAI chat-completions request: JSON body in, a checked `ChatRequest` out.

Every problem a caller can cause raises `RequestError` naming the offending field,
which the server turns into a 400 (413 for a request over a size limit) with an
OpenAI-style error body.

The limits (`RequestLimits`) bound what one request can cost before the model sees
it: each was found by a probe that took seconds to minutes and gigabytes (see the
comments), and each is far above what a real chat or tool set needs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from glm_client.config import ConfigError, GenerationParams
from glm_client.dialects.base import ToolSchema, function_of
from glm_client.messages import Message

# Which request fields become which `client.stream` parameters; max_completion_tokens
# is the newer name of max_tokens, and repetition_penalty is the vLLM extension.
_NUMBER_PARAMS = {"temperature": "temperature", "top_p": "top_p", "repetition_penalty": "repetition_penalty"}
_INTEGER_PARAMS = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "seed": "seed",
    "loop_stop_tokens": "loop_stop_tokens",  # this server's own, as repetition_penalty is vLLM's
}


# A 15 MB body took 23.5 s and 1.4 -> 4.4 GB RSS. 8 MiB holds MAX_TOTAL_CHARS even as
# \uXXXX-escaped CJK text, and 16x a 128k-token context of English.
MAX_BODY_BYTES = 8 * 1024 * 1024
# 2000 turns was the probe that made trimming quadratic; long agent sessions stay in the hundreds.
MAX_MESSAGES = 2048
# Characters of message text (content and tool-call arguments): ~250k tokens, twice the
# longest context of the GLM models this serves; more could only be trimmed away.
MAX_TOTAL_CHARS = 1_000_000
# OpenAI's own limit on tools per request.
MAX_TOOLS = 128
# The tools as compact JSON: 128 tools of ~1.5 KB each; every byte is also prompt tokens.
MAX_TOOLS_JSON_CHARS = 200_000
# What the `pattern`s of the tool schemas expand to through counted repetition ({n}, {n,m},
# nested ones multiplied): "^a{40000}$" took 76 s in the grammar compiler, and xgrammar
# builds a{2000} in 0.3 s and a{100} in milliseconds.
MAX_PATTERN_EXPANSION = 1000
# Enum values in all tool schemas together: a 50,000-value enum took 22 s and 693 MB to
# compile, 1,000 takes 0.3 s; real enums (countries, time zones) are in the hundreds.
MAX_ENUM_VALUES = 2000
# Nesting of tool schemas: the schema walkers recurse; real schemas nest a handful deep.
MAX_SCHEMA_DEPTH = 64


@dataclass(frozen=True)
class RequestLimits:
    """The per-request limits; the defaults are the module constants above."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_messages: int = MAX_MESSAGES
    max_total_chars: int = MAX_TOTAL_CHARS
    max_tools: int = MAX_TOOLS
    max_tools_json_chars: int = MAX_TOOLS_JSON_CHARS
    max_pattern_expansion: int = MAX_PATTERN_EXPANSION
    max_enum_values: int = MAX_ENUM_VALUES
    max_schema_depth: int = MAX_SCHEMA_DEPTH


class RequestError(ValueError):
    """A request the server cannot answer: one sentence, plus the field it is about.

    `status` is 400, or 413 for a request over a size limit.
    """

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


def _too_large(message: str, param: str | None) -> RequestError:
    return RequestError(message, param, code="request_too_large", status=413)


@dataclass
class ChatRequest:
    messages: list[Message]
    tools: list[ToolSchema] | None = None
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments for client.stream
    stream: bool = False
    include_usage: bool = False
    legacy_functions: bool = False  # asked with `functions`: answer with `function_call`
    model: str = ""  # the model asked for; empty: the server's default


def parse_chat_request(body: bytes, limits: RequestLimits | None = None) -> ChatRequest:
    """The request in `body`, checked against `limits` (the defaults when None); raises RequestError."""
    limits = limits or RequestLimits()
    if len(body) > limits.max_body_bytes:
        raise body_too_large(limits)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(f"The request body is not valid JSON: {error}.") from None
    except RecursionError:
        raise RequestError("The request body is nested too deeply to read.") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    messages = _messages(data.get("messages"), limits)
    if data.get("n") not in (None, 1):
        raise RequestError("Only n=1 is supported: this server generates one choice per request.", "n")
    tools, legacy = _tools(data)
    if tools:
        check_tool_limits(tools, "functions" if legacy else "tools", limits)
    tools, force_tool = _tool_choice(data, tools, legacy)
    params = _generation_params(data)
    if force_tool:
        params["force_tool"] = force_tool
    enable_thinking = _thinking_switch(data)
    if enable_thinking is not None:
        params["enable_thinking"] = enable_thinking
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string: the name of a model GET /v1/models lists.", "model")
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
        model=(model or "").strip(),
    )


def body_too_large(limits: RequestLimits) -> RequestError:
    """The error for a body over `limits.max_body_bytes`."""
    return _too_large(f"The request body is larger than this server's limit of {limits.max_body_bytes} bytes.", None)


def _messages(raw: Any, limits: RequestLimits) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list of messages.", "messages")
    if len(raw) > limits.max_messages:
        raise _too_large(
            f"messages has {len(raw)} messages, more than this server's limit of {limits.max_messages}.", "messages"
        )
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
    total = sum(_message_chars(message) for message in messages)
    if total > limits.max_total_chars:
        raise _too_large(
            f"The messages hold {total} characters, more than this server's limit of {limits.max_total_chars}.",
            "messages",
        )
    return messages


def _message_chars(message: Message) -> int:
    calls = sum(len(call.name) + len(json.dumps(call.arguments, ensure_ascii=False)) for call in message.tool_calls)
    return len(message.content) + len(message.reasoning) + calls


def check_tool_limits(tools: list[ToolSchema], param: str, limits: RequestLimits) -> None:
    """Raise RequestError when the tools are over a limit: count, JSON size, schema depth, patterns, enums."""
    if len(tools) > limits.max_tools:
        raise _too_large(f"{param} has {len(tools)} tools, more than this server's limit of {limits.max_tools}.", param)
    size = len(json.dumps(tools, ensure_ascii=False, separators=(",", ":")))
    if size > limits.max_tools_json_chars:
        raise _too_large(
            f"{param} is {size} characters of JSON, more than this server's limit of {limits.max_tools_json_chars}.",
            param,
        )
    enum_values = 0
    for index, tool in enumerate(tools):
        where = f"{param}[{index}]"
        for node, depth in _schema_nodes(tool):
            if depth > limits.max_schema_depth:
                raise RequestError(
                    f"{where} nests deeper than this server's limit of {limits.max_schema_depth}.", where
                )
            if isinstance(node.get("enum"), list):
                enum_values += len(node["enum"])
                if enum_values > limits.max_enum_values:
                    raise _too_large(
                        f"The tool schemas hold more than this server's limit of {limits.max_enum_values} enum values.",
                        where,
                    )
            pattern = node.get("pattern")
            if isinstance(pattern, str):
                expansion = pattern_expansion(pattern)
                if expansion > limits.max_pattern_expansion:
                    raise RequestError(
                        f"{where} has a pattern whose counted repetitions expand to {expansion} characters, "
                        f"more than this server's limit of {limits.max_pattern_expansion}.",
                        where,
                    )


def _schema_nodes(schema: Any, depth: int = 0) -> list[tuple[dict[str, Any], int]]:
    """Every object in `schema` with its nesting depth; iterative, so any depth is safe to walk."""
    found: list[tuple[dict[str, Any], int]] = []
    stack = [(schema, depth)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            found.append((node, level))
            # enum lists are values, counted above, not schemas (a property may be named "enum")
            stack.extend(
                (value, level + 1) for key, value in node.items() if not (key == "enum" and isinstance(value, list))
            )
        elif isinstance(node, list):
            stack.extend((item, level + 1) for item in node)
    return found


_COUNTED = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def pattern_expansion(pattern: str) -> int:
    """How many characters `pattern` spells out once counted repetitions are expanded (nested ones multiply).

    Unbounded `*`/`+` and `{n,}` count their atom n times (at least once): the grammar
    compiler loops on those instead of unrolling them.
    """
    totals = [0]  # one running total per open group
    last = 0  # the size of the atom a quantifier would repeat
    i = 0
    while i < len(pattern):
        char = pattern[i]
        counted = _COUNTED.match(pattern, i) if char == "{" else None
        if counted:
            times = max(int(counted.group(1)), int(counted.group(2) or 0), 1)
            totals[-1] += last * (times - 1)
            last *= times
            i = counted.end()
            continue
        if char == "(":
            totals.append(0)
            i += 1
            continue
        if char == ")" and len(totals) > 1:
            last = totals.pop()
            totals[-1] += last
            i += 1
            continue
        if char in "*+?|^$":
            i += 1
            continue
        if char == "[":  # a class is one character: skip to its closing bracket
            end = i + 1
            end += pattern[end] == "^" if end < len(pattern) else 0
            end += pattern[end] == "]" if end < len(pattern) else 0
            while end < len(pattern) and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            i = end + 1
        else:
            i += 2 if char == "\\" else 1
        last = 1
        totals[-1] += 1
    return sum(totals)


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
    for name in (*_NUMBER_PARAMS, "seed", "loop_stop_tokens"):
        if message.startswith(name):
            return name
    return "max_tokens" if message.startswith("max_new_tokens") else None


def _thinking_switch(data: dict[str, Any]) -> bool | None:
    """`chat_template_kwargs.enable_thinking`, as vLLM and SGLang take it; other template kwargs are ignored."""
    kwargs = data.get("chat_template_kwargs")
    if kwargs is None:
        return None
    if not isinstance(kwargs, dict):
        raise RequestError("chat_template_kwargs must be an object.", "chat_template_kwargs")
    value = kwargs.get("enable_thinking")
    if value is not None and not isinstance(value, bool):
        raise RequestError("chat_template_kwargs.enable_thinking must be true or false.", "chat_template_kwargs")
    return value


def _boolean(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false.", name)
    return value
