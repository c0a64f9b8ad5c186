"""Sessions with MCP servers (stdio or Streamable HTTP), owned by one background event loop thread.

The MCP SDK is async; the dispatcher is not. One daemon thread runs an asyncio loop for the
whole process; each server's session lives in a task of that loop (the SDK's transports must
be entered and left in one task), and a call from any thread is a coroutine handed to the loop
and waited for here, with the server's timeout and the turn's cancel event. Cancelling the
call's task makes the SDK send the MCP `notifications/cancelled` for it.

Stdio servers get the SDK's safe default environment (PATH, HOME, ...) plus the env of their
config entry, never the app's environment: the app's secrets (SERVER_API_KEY, APP_PASSWORD,
OPENAI_API_KEY, DATABASE_URL) stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import IO, Any

from tools.mcp_config import ServerConfig
from tools.result import ToolResult

ProgressListener = Callable[[float, float | None, str | None], None]
STDERR_TAIL_CHARS = 2_000
_POLL_S = 0.1  # how often a waiting call looks at the cancel event

# Set around a turn by the page (or any caller): what the next MCP calls on this context listen to.
call_cancel: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("mcp_call_cancel", default=None)
call_progress: contextvars.ContextVar[ProgressListener | None] = contextvars.ContextVar(
    "mcp_call_progress", default=None
)


@contextlib.contextmanager
def call_context(cancel: threading.Event | None = None, on_progress: ProgressListener | None = None) -> Iterator[None]:
    """MCP calls made inside stop when `cancel` is set and report progress to `on_progress`.

    `on_progress(progress, total, message)` runs on the thread that waits for the call.
    """
    cancel_token = call_cancel.set(cancel)
    progress_token = call_progress.set(on_progress)
    try:
        yield
    finally:
        call_progress.reset(progress_token)
        call_cancel.reset(cancel_token)


class McpConnectError(Exception):
    """A server could not be started or did not complete the MCP handshake."""

    def __init__(self, reason: str, stderr_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr_tail = stderr_tail


class _Loop:
    """The process's one MCP event loop, on a daemon thread started at first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or not self._loop.is_running():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=run, name="mcp-loop", daemon=True).start()
                started.wait()
                self._loop = loop
            return self._loop

    def submit(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.get())


LOOP = _Loop()


@dataclass
class McpConnection:
    """One live session with one server; `alive` turns False when its transport ends."""

    config: ServerConfig
    tools: list[Any] = field(default_factory=list)  # mcp_types.Tool
    session: Any = None  # mcp.ClientSession, used only on the loop's thread
    alive: bool = False
    error: str | None = None
    _stop: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None
    _stderr: IO[str] | None = None

    def stderr_tail(self) -> str:
        return read_tail(self._stderr)

    def close(self, timeout: float = 10.0) -> None:
        """End the session (and a stdio server's process); waits up to `timeout` seconds."""
        if self._task is None or self._stop is None:
            return
        loop, stop, task = LOOP.get(), self._stop, self._task

        async def finish() -> None:
            stop.set()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), timeout)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(finish(), loop).result(timeout + 1)
        self.alive = False
        stderr, self._stderr = self._stderr, None  # two threads may close it (a failed call, a reconnect)
        if stderr is not None:
            with contextlib.suppress(ValueError, OSError):
                stderr.close()


def connect(config: ServerConfig, timeout: float | None = None) -> McpConnection:
    """Start (stdio) or reach (HTTP) the server, complete the handshake and list its tools.

    Raises McpConnectError with a one-sentence reason and, for stdio, the tail of its stderr.
    """
    limit = timeout if timeout is not None else config.timeout
    connection = McpConnection(config)
    if config.command:
        # Kept open as long as the server runs (closed by McpConnection.close): its stderr goes there.
        connection._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
    ready: Future[None] = Future()
    LOOP.submit(_start(connection, ready))
    try:
        ready.result(limit)
    except FutureTimeout:
        connection.close(timeout=5)
        raise McpConnectError(f"no answer to the MCP handshake within {limit:g} s", connection.stderr_tail()) from None
    except McpConnectError as error:
        error.stderr_tail = error.stderr_tail or connection.stderr_tail()
        connection.close(timeout=5)
        raise
    return connection


async def _start(connection: McpConnection, ready: Future[None]) -> None:
    connection._stop = asyncio.Event()
    connection._task = asyncio.current_task()
    try:
        await _serve(connection, ready)
    except BaseException as error:  # the transport's end: a crash, a closed pipe, a refused connection
        reason = describe_error(error)
        if not ready.done():
            ready.set_exception(McpConnectError(reason))
        connection.error = reason
    finally:
        connection.alive = False
        connection.session = None


async def _serve(connection: McpConnection, ready: Future[None]) -> None:
    from mcp import ClientSession

    config = connection.config
    async with contextlib.AsyncExitStack() as stack:
        if config.command:
            from mcp import StdioServerParameters, stdio_client

            params = StdioServerParameters(command=config.command, args=config.args, env=config.env, cwd=config.cwd)
            streams = await stack.enter_async_context(stdio_client(params, errlog=connection._stderr))  # type: ignore[arg-type]
        else:
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            http = await stack.enter_async_context(create_mcp_http_client(headers=config.headers or None))
            streams = await stack.enter_async_context(streamable_http_client(str(config.url), http_client=http))
        read, write = streams[0], streams[1]
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        tools: list[Any] = []
        cursor: str | None = None
        while True:
            from mcp_types import PaginatedRequestParams

            page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        connection.tools, connection.session, connection.alive = tools, session, True
        ready.set_result(None)
        assert connection._stop is not None
        await connection._stop.wait()


def call_tool(
    connection: McpConnection,
    tool: str,
    arguments: dict[str, Any],
    *,
    display_name: str,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    on_progress: ProgressListener | None = None,
) -> ToolResult:
    """Call `tool` on the server; every outcome (isError, timeout, Stop, a crash) is a ToolResult."""
    from tools.mcp_content import to_tool_result

    limit = timeout if timeout is not None else connection.config.timeout
    session = connection.session
    if session is None or not connection.alive:
        return ToolResult.failure(f"Tool `{display_name}` could not be run: the MCP server is not connected.")

    updates: queue.SimpleQueue[tuple[float, float | None, str | None]] = queue.SimpleQueue()

    async def progress(value: float, total: float | None, message: str | None) -> None:
        updates.put((value, total, message))  # handed to the waiting thread, which calls on_progress

    started = time.perf_counter()
    future = LOOP.submit(session.call_tool(tool, arguments, progress_callback=progress))
    deadline = started + limit
    while True:
        try:
            result = future.result(min(_POLL_S, max(0.0, deadline - time.perf_counter())))
            _deliver(updates, on_progress)
            break
        except FutureTimeout:
            _deliver(updates, on_progress)
        except BaseException as error:  # the server crashed, or the session broke: start afresh next time
            connection.alive = False
            threading.Thread(target=connection.close, name="mcp-close", daemon=True).start()
            return ToolResult.failure(
                f"Tool `{display_name}` failed: {describe_error(error)} (the MCP server "
                f"`{connection.config.name}` is reconnected at the next call).",
                duration_s=time.perf_counter() - started,
            )
        if cancel is not None and cancel.is_set():
            future.cancel()  # the SDK sends notifications/cancelled for the request
            return ToolResult.failure(
                f"Tool `{display_name}` was stopped by the user.", duration_s=time.perf_counter() - started
            )
        if time.perf_counter() >= deadline:
            future.cancel()
            return ToolResult.failure(f"Tool `{display_name}` timed out after {limit:g} s", duration_s=limit)
    return to_tool_result(result, tool=display_name, duration_s=time.perf_counter() - started)


def _deliver(
    updates: queue.SimpleQueue[tuple[float, float | None, str | None]], listener: ProgressListener | None
) -> None:
    while not updates.empty():
        update = updates.get()
        if listener is not None:
            listener(*update)


def describe_error(error: BaseException) -> str:
    """One line for an exception, looking inside the task groups the SDK raises."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, FileNotFoundError):
        return f"command not found: {error.filename or error}"
    if isinstance(error, PermissionError):
        return f"command cannot be run: {error}"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__
    if name in ("ConnectError", "ConnectTimeout"):
        return f"cannot connect: {text or name}"
    return f"{name}: {text}" if text else name


def read_tail(stream: IO[str] | None, limit: int = STDERR_TAIL_CHARS) -> str:
    if stream is None or stream.closed:
        return ""
    try:
        # pread leaves the file offset alone: the server's process shares it and may still write.
        descriptor = stream.fileno()
        size = os.fstat(descriptor).st_size
        data = os.pread(descriptor, limit * 4, max(0, size - limit * 4))
    except (OSError, ValueError):
        return ""
    return data.decode("utf-8", "replace")[-limit:].strip()
