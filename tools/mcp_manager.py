"""MCP servers' tools in the registry: connect the configured servers, register their tools, keep their state.

An MCP tool is a regular registry Tool named `<server>__<tool>` (tools/mcp_config.py): its
schema is the server's inputSchema, so dispatch validates arguments with jsonschema and a
forced call is constrained to it like any other. It runs in a thread of the app
(`isolated=False`) that only waits for the MCP loop (tools/mcp_client.py), with its server's
timeout. A server whose session ended (it crashed) is reconnected at its next call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonschema.exceptions import SchemaError as JsonSchemaError

from tools.mcp_client import McpConnectError, McpConnection, call_cancel, call_progress, call_tool, connect
from tools.mcp_config import ServerConfig, config_path, read_config, tool_name, write_config
from tools.registry import Tool, ToolRegistry, default_registry
from tools.result import ToolResult

if TYPE_CHECKING:
    from glm_client.config import Settings

_RECONNECT_GRACE_S = 5.0


@dataclass(frozen=True)
class ServerStatus:
    """One server as the Tool page shows it: connected, failed (and why), or disabled."""

    name: str
    state: str  # "connected" | "failed" | "disabled"
    transport: str
    tools: tuple[str, ...] = ()  # registry names
    error: str | None = None
    stderr_tail: str = ""
    skipped: tuple[str, ...] = ()  # tools whose schema the registry refused, with the reason

    @property
    def connected(self) -> bool:
        return self.state == "connected"


@dataclass
class _Server:
    config: ServerConfig
    connection: McpConnection | None = None
    status: ServerStatus | None = None
    names: dict[str, str] = field(default_factory=dict)  # registry name -> MCP tool name
    lock: threading.Lock = field(default_factory=threading.Lock)


class McpServers:
    """The configured MCP servers of one registry."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()

    # --- connecting ---------------------------------------------------------------------
    def load(self, configs: dict[str, ServerConfig], timeout: float | None = None) -> list[ServerStatus]:
        """Connect every enabled server in `configs` (in parallel) and drop the servers not in it."""
        with self._lock:
            gone = [name for name in self._servers if name not in configs]
        for name in gone:
            self.remove(name)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(configs)))) as pool:
            return list(pool.map(lambda config: self.connect(config, timeout), configs.values()))

    def connect(self, config: ServerConfig, timeout: float | None = None) -> ServerStatus:
        """(Re)connect one server and register its tools; a disabled server is only recorded."""
        with self._lock:
            server = self._servers.setdefault(config.name, _Server(config))
        with server.lock:
            self._disconnect(server)
            server.config = config
            if not config.enabled:
                server.status = ServerStatus(config.name, "disabled", config.transport)
                return server.status
            try:
                server.connection = connect(config, timeout)
            except McpConnectError as error:
                server.status = ServerStatus(
                    config.name, "failed", config.transport, error=error.reason, stderr_tail=error.stderr_tail
                )
                return server.status
            server.status = self._register(server)
            return server.status

    def reconnect(self, name: str, timeout: float | None = None) -> ServerStatus:
        with self._lock:
            server = self._servers[name]
        return self.connect(server.config, timeout)

    def remove(self, name: str) -> None:
        with self._lock:
            server = self._servers.pop(name, None)
        if server is not None:
            with server.lock:
                self._disconnect(server)

    def close(self) -> None:
        for name in list(self._servers):
            self.remove(name)

    def _disconnect(self, server: _Server) -> None:
        for registered in server.names:
            self.registry.unregister(registered)
        server.names = {}
        if server.connection is not None:
            server.connection.close()
            server.connection = None

    def _register(self, server: _Server) -> ServerStatus:
        assert server.connection is not None
        config, names, skipped = server.config, {}, []
        for mcp_tool in server.connection.tools:
            name = tool_name(config.name, mcp_tool.name)
            try:
                tool = Tool(
                    name=name,
                    description=mcp_tool.description or mcp_tool.title or mcp_tool.name,
                    parameters=tool_parameters(mcp_tool.input_schema),
                    function=self._caller(config.name, mcp_tool.name, name),
                    enabled=mcp_tool.name not in config.disabled_tools,
                    isolated=False,
                    timeout=2 * config.timeout + _RECONNECT_GRACE_S,  # a reconnect, then the call
                )
            except JsonSchemaError as error:
                skipped.append(f"{mcp_tool.name}: its inputSchema is not a valid JSON Schema ({error.message})")
                continue
            self.registry.add(tool)
            names[name] = mcp_tool.name
        server.names = names
        return ServerStatus(config.name, "connected", config.transport, tuple(names), skipped=tuple(skipped))

    # --- calling ------------------------------------------------------------------------
    def _caller(self, server_name: str, mcp_name: str, registry_name: str) -> Callable[..., ToolResult]:
        def call(**arguments: Any) -> ToolResult:
            connection = self._live_connection(server_name)
            if isinstance(connection, str):
                return ToolResult.failure(f"Tool `{registry_name}` could not be run: {connection}")
            return call_tool(
                connection,
                mcp_name,
                arguments,
                display_name=registry_name,
                cancel=call_cancel.get(),
                on_progress=call_progress.get(),
            )

        call.__name__ = registry_name
        return call

    def _live_connection(self, name: str) -> McpConnection | str:
        """The server's session, reconnected first when it ended; or why there is none."""
        with self._lock:
            server = self._servers.get(name)
        if server is None:
            return f"the MCP server `{name}` is not configured."
        with server.lock:
            if server.connection is not None and server.connection.alive:
                return server.connection
            if server.connection is not None:
                server.connection.close(timeout=2)
            try:
                server.connection = connect(server.config)
            except McpConnectError as error:
                server.connection = None
                server.status = ServerStatus(
                    name, "failed", server.config.transport, error=error.reason, stderr_tail=error.stderr_tail
                )
                return f"the MCP server `{name}` is down and could not be reconnected ({error.reason})."
            server.status = ServerStatus(name, "connected", server.config.transport, tuple(server.names))
            return server.connection

    # --- state --------------------------------------------------------------------------
    def statuses(self) -> list[ServerStatus]:
        with self._lock:
            servers = list(self._servers.values())
        return [server.status for server in servers if server.status is not None]

    def config(self, name: str) -> ServerConfig | None:
        server = self._servers.get(name)
        return server.config if server else None

    def mcp_tool_name(self, server: str, registered: str) -> str | None:
        entry = self._servers.get(server)
        return entry.names.get(registered) if entry else None


def tool_parameters(input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The server's inputSchema as a tool's parameters: an object schema with `properties`."""
    schema = dict(input_schema or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


default_servers = McpServers(default_registry)


def load_mcp_servers(
    path: str | Path | None = None,
    timeout: float | None = None,
    *,
    servers: McpServers | None = None,
) -> list[ServerStatus]:
    """Connect every enabled server of the MCP config, register its tools, and return each server's status.

    `path` None: MCP_CONFIG, else DATA_DIR/mcp.json when it exists (no servers otherwise).
    `timeout` bounds each server's start and handshake (its own "timeout" when None).
    Raises tools.mcp_config.McpConfigError, one sentence, for a malformed file.
    """
    if path is None:
        from glm_client.config import Settings  # here: `import tools` stays free of glm_client

        path = config_path(Settings.from_env())
    return (servers or default_servers).load(read_config(path), timeout)


# --- the Tool page's controls: each change is saved to the config file, then applied ------
def save_server(path: Path, config: ServerConfig, servers: McpServers | None = None) -> ServerStatus:
    """Add or replace one server in the file, then (re)connect it."""
    configs = read_config(path)
    configs[config.name] = config
    write_config(path, configs)
    return (servers or default_servers).connect(config)


def remove_server(path: Path, name: str, servers: McpServers | None = None) -> None:
    configs = read_config(path)
    configs.pop(name, None)
    write_config(path, configs)
    (servers or default_servers).remove(name)


def set_server_enabled(path: Path, name: str, enabled: bool, servers: McpServers | None = None) -> ServerStatus:
    configs = read_config(path)
    config = replace(configs[name], enabled=enabled)
    return save_server(path, config, servers)


def set_tool_enabled(
    path: Path, server: str, registered: str, enabled: bool, servers: McpServers | None = None
) -> None:
    """Switch one MCP tool on or off, in the registry now and in the file's "disabledTools"."""
    manager = servers or default_servers
    mcp_name = manager.mcp_tool_name(server, registered)
    if mcp_name is None:
        raise KeyError(registered)
    manager.registry.set_enabled(registered, enabled)
    configs = read_config(path)
    config = configs[server]
    disabled = set(config.disabled_tools) - {mcp_name}
    if not enabled:
        disabled.add(mcp_name)
    configs[server] = replace(config, disabled_tools=sorted(disabled))
    write_config(path, configs)
    live = manager.config(server)
    if live is not None:
        live.disabled_tools = sorted(disabled)


_background_started = threading.Event()


def load_in_background(settings: Settings) -> None:
    """Once per process: connect the configured servers on a thread, so a dead one never blocks a page."""
    if _background_started.is_set():
        return
    _background_started.set()
    path = config_path(settings)
    if path is None:
        return

    def run() -> None:
        try:
            default_servers.load(read_config(path))
        except Exception as error:  # a malformed file: the Tool page reads it again and shows why
            _background_error.append(str(error))

    threading.Thread(target=run, name="mcp-load", daemon=True).start()


_background_error: list[str] = []
