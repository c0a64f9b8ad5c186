"""Call a tool by name with the model's arguments: parse, validate, run with a timeout, report.

Every failure becomes a `ToolResult` whose text tells the model what went wrong, so
the conversation can go on; `dispatch_tool` never raises.

A tool runs in a daemon worker thread so that a slow one can be abandoned after
`timeout` seconds. Python cannot kill a thread: an abandoned tool keeps running in
the background until it returns on its own (its output is discarded). Tools that
may block for long should carry their own timeouts (as `get_weather` and `shell` do).
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from typing import Any

from jsonschema.exceptions import best_match

from tools.capture import capture_stdout
from tools.registry import Tool, ToolRegistry, default_registry
from tools.result import ToolResult

DEFAULT_TIMEOUT_S = 30.0
_MAX_ERROR_DETAIL = 300  # a huge argument value shouldn't flood the error message


def dispatch_tool(
    name: str,
    arguments: dict[str, Any] | str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    *,
    registry: ToolRegistry | None = None,
) -> ToolResult:
    """Run tool `name` with `arguments` (a dict, or a JSON object as a string). Never raises."""
    started = time.perf_counter()
    try:
        registry = registry or default_registry
        tool = registry.get(name) if isinstance(name, str) else None
        if tool is None:
            available = ", ".join(t.name for t in registry.list_tools()) or "(none)"
            return ToolResult.failure(f"Tool `{name}` not found; available tools: {available}")
        if reason := tool.disabled_reason:
            return ToolResult.failure(f"Tool `{name}` is {reason}.")
        parsed = parse_arguments(arguments)
        if isinstance(parsed, str):
            return ToolResult.failure(f"Invalid arguments for `{name}`: {parsed}\n{describe_parameters(tool)}")
        if problem := validation_problem(tool, parsed):
            return ToolResult.failure(f"Invalid arguments for `{name}`: {problem}\n{describe_parameters(tool)}")
        return run_tool(tool, parsed, timeout)
    except Exception as exc:  # a bug here must not end the conversation either
        return ToolResult.failure(
            f"Tool `{name}` could not be run: {type(exc).__name__}: {exc}", duration_s=time.perf_counter() - started
        )


def parse_arguments(arguments: Any) -> dict[str, Any] | str:
    """The arguments as a dict, or a message saying why they aren't one."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            return f"arguments are not valid JSON ({exc})"
    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    return arguments


def validation_problem(tool: Tool, arguments: dict[str, Any]) -> str | None:
    """The most relevant schema violation, naming the argument, or None when the arguments fit."""
    error = best_match(tool.validator.iter_errors(arguments))
    if error is None:
        return None
    message = error.message
    if len(message) > _MAX_ERROR_DETAIL:
        message = message[:_MAX_ERROR_DETAIL] + "…"
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path).lstrip(".")
    return f"'{path}': {message}" if path else message


def describe_parameters(tool: Tool) -> str:
    """The expected parameters, one per line, for an error message the model can act on."""
    properties = tool.parameters.get("properties", {})
    if not properties:
        return "Expected parameters: none."
    required = set(tool.parameters.get("required", []))
    lines = ["Expected parameters:"]
    for name, schema in properties.items():
        kind = _type_label(schema) + (", required" if name in required else ", optional")
        description = f": {schema['description']}" if schema.get("description") else ""
        lines.append(f"- {name} ({kind}){description}")
    return "\n".join(lines)


def run_tool(tool: Tool, arguments: dict[str, Any], timeout: float | None = DEFAULT_TIMEOUT_S) -> ToolResult:
    """Call the tool in a worker thread and wait up to `timeout` seconds (None waits forever)."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        with capture_stdout() as stdout:
            try:
                outcome["value"] = tool.function(**arguments)
            except BaseException as exc:  # SystemExit and friends too: the tool must not take the app down
                outcome["error"] = exc
            finally:
                outcome["stdout"] = stdout.getvalue()

    started = time.perf_counter()
    # The caller's context (the session's working directory, tools/workspace.py) goes with the call.
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(call,), name=f"tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    duration = time.perf_counter() - started

    if worker.is_alive():
        return ToolResult.failure(f"Tool `{tool.name}` timed out after {timeout:g} s", duration_s=duration)
    stdout = outcome.get("stdout", "")
    if "error" in outcome:
        exc = outcome["error"]
        detail = f": {exc}" if str(exc) else ""
        return ToolResult.failure(
            f"Tool `{tool.name}` raised {type(exc).__name__}{detail}", stdout=stdout, duration_s=duration
        )
    return ToolResult.success(outcome.get("value"), stdout=stdout, duration_s=duration)


def _type_label(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(value, ensure_ascii=False) for value in schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_type_label(schema['items'])}"
    return kind
