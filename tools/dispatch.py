"""Call a tool by name with the model's arguments: parse, validate, run with a timeout, report.

Every failure becomes a `ToolResult` whose text tells the model what went wrong, so
the conversation can go on; `dispatch_tool` never raises.

A tool runs in a worker process (tools/isolation.py): a call that overruns its
`timeout` has its worker killed, so even a tool stuck in C code holding the GIL
(`10 ** 10 ** 8`) cannot freeze the app or keep running. Functions a worker cannot
find (defined inside another function, in `__main__`), and tools registered with
`isolated=False`, run in a daemon thread instead, which a timeout can only abandon.
"""

from __future__ import annotations

import contextvars
import json
import time
from typing import Any

from jsonschema.exceptions import best_match

from tools.capture import capture_stdout
from tools.isolation import (
    FunctionRef,
    UnreadableReply,
    WorkerCrashed,
    WorkerUnavailable,
    call_deadline,
    locate,
    pool,
)
from tools.registry import Tool, ToolRegistry, default_registry
from tools.result import ToolResult
from tools.workspace import current_workdir

# How long one tool call may run before its worker is killed and the model is told so.
TOOL_CALL_TIMEOUT_S = 30.0
_MAX_ERROR_DETAIL = 300  # a huge argument value shouldn't flood the error message


def dispatch_tool(
    name: str,
    arguments: dict[str, Any] | str | None = None,
    timeout: float | None = TOOL_CALL_TIMEOUT_S,
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


def run_tool(tool: Tool, arguments: dict[str, Any], timeout: float | None = TOOL_CALL_TIMEOUT_S) -> ToolResult:
    """Call the tool and wait up to `timeout` seconds (None waits forever), or the tool's own limit."""
    if tool.timeout is not None:
        timeout = tool.timeout
    ref = locate(tool.function) if tool.isolated else None
    if ref is None:
        # A closure's cells hold this process's live objects (events, locks, the test's state),
        # and a function in `__main__` or behind another decorator has no name a worker could
        # import: these can only run here. Pickling them by value would need a new dependency
        # (cloudpickle) and would still copy, not share, what they close over.
        return run_in_thread(tool, arguments, timeout)
    return run_in_worker(tool, ref, arguments, timeout)


def run_in_worker(tool: Tool, ref: FunctionRef, arguments: dict[str, Any], timeout: float | None) -> ToolResult:
    """Run the tool in a worker process, killed (and replaced) when it overruns `timeout`."""
    started = time.perf_counter()
    try:
        # A worker has no context variables of ours: the session's working directory goes explicitly.
        reply, duration = pool.run(ref, arguments, str(current_workdir()), timeout)
    except WorkerCrashed as exc:
        return ToolResult.failure(
            f"Tool `{tool.name}` crashed: its worker process {exc}", duration_s=time.perf_counter() - started
        )
    except WorkerUnavailable as exc:
        return ToolResult.failure(f"Tool `{tool.name}` could not be run: {exc}")
    except UnreadableReply as exc:
        return ToolResult.failure(
            f"Tool `{tool.name}` returned a value that could not be passed back to the app: {exc}",
            duration_s=time.perf_counter() - started,
        )
    if reply is None:
        return ToolResult.failure(f"Tool `{tool.name}` timed out after {timeout:g} s", duration_s=duration)
    if not reply.ok:
        detail = f": {reply.error_message}" if reply.error_message else ""
        return ToolResult.failure(
            f"Tool `{tool.name}` raised {reply.error_type}{detail}", stdout=reply.stdout, duration_s=duration
        )
    return ToolResult.success(reply.value, stdout=reply.stdout, duration_s=duration)


def run_in_thread(tool: Tool, arguments: dict[str, Any], timeout: float | None = TOOL_CALL_TIMEOUT_S) -> ToolResult:
    """Call the tool in a daemon thread; on timeout the thread is abandoned, not stopped."""
    from glm_client.worker_thread import WorkerThread  # here: `import tools` stays free of glm_client

    printed: list[str] = []

    def call() -> Any:
        with capture_stdout() as stdout, call_deadline(timeout):
            try:
                return tool.function(**arguments)
            finally:
                printed.append(stdout.getvalue())

    started = time.perf_counter()
    # The caller's context (the session's working directory, tools/workspace.py) goes with the call.
    context = contextvars.copy_context()
    worker = WorkerThread(lambda: context.run(call), name=f"tool-{tool.name}")
    worker.join(timeout)
    duration = time.perf_counter() - started

    if worker.is_alive():
        return ToolResult.failure(f"Tool `{tool.name}` timed out after {timeout:g} s", duration_s=duration)
    stdout = "".join(printed)
    # SystemExit and friends are caught too (WorkerThread): the tool must not take the app down.
    exc = worker.error
    if exc is not None:
        detail = f": {exc}" if str(exc) else ""
        return ToolResult.failure(
            f"Tool `{tool.name}` raised {type(exc).__name__}{detail}", stdout=stdout, duration_s=duration
        )
    value = worker.result()
    if isinstance(value, ToolResult):  # a tool that shapes its own result (an MCP tool: images, isError)
        value.duration_s = value.duration_s or duration
        return value
    return ToolResult.success(value, stdout=stdout, duration_s=duration)


def _type_label(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(value, ensure_ascii=False) for value in schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_type_label(schema['items'])}"
    return kind
