"""The MCP servers file (MCP_CONFIG): read, check, write; and the names MCP tools get in the registry.

The format is the one other MCP clients use::

    {"mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}, "cwd": "/tmp"},
        "search": {"url": "http://127.0.0.1:9000/mcp", "headers": {"Authorization": "Bearer ..."}}}}

Each server may also set `"timeout"` (seconds per call, 60 by default), `"enabled"` (true by
default) and `"disabledTools"` (names of its tools the user switched off in Tool mode).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from glm_client.config import Settings

DEFAULT_TIMEOUT_S = 60.0
MAX_NAME_LENGTH = 64  # the function-name rule of the OpenAI API and of most chat templates
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_SERVER_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


class McpConfigError(ValueError):
    """The MCP servers file cannot be used; the message is one sentence naming the problem."""


@dataclass
class ServerConfig:
    """One entry of `mcpServers`: a stdio command or a Streamable HTTP URL."""

    name: str
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT_S
    enabled: bool = True
    disabled_tools: list[str] = field(default_factory=list)

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.command:
            data["command"] = self.command
            if self.args:
                data["args"] = list(self.args)
            if self.env:
                data["env"] = dict(self.env)
            if self.cwd:
                data["cwd"] = self.cwd
        else:
            data["url"] = self.url
            if self.headers:
                data["headers"] = dict(self.headers)
        if self.timeout != DEFAULT_TIMEOUT_S:
            data["timeout"] = self.timeout
        if not self.enabled:
            data["enabled"] = False
        if self.disabled_tools:
            data["disabledTools"] = sorted(self.disabled_tools)
        return data


def config_path(settings: Settings, *, for_writing: bool = False) -> Path | None:
    """MCP_CONFIG, else DATA_DIR/mcp.json when it exists (or always, `for_writing`)."""
    if settings.mcp_config:
        return Path(settings.mcp_config).expanduser()
    default = Path(settings.data_dir) / "mcp.json"
    return default if for_writing or default.is_file() else None


def read_config(path: str | os.PathLike[str] | None) -> dict[str, ServerConfig]:
    """The servers in `path` (none when it is None or missing). Raises McpConfigError."""
    if path is None or not Path(path).exists():
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise McpConfigError(f"MCP config {path} cannot be read: {error}.") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise McpConfigError(
            f"MCP config {path} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    return parse_config(data, str(path))


def parse_config(data: Any, where: str = "MCP config") -> dict[str, ServerConfig]:
    if not isinstance(data, dict):
        raise McpConfigError(f'{where} must be a JSON object with an "mcpServers" object.')
    servers = data.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise McpConfigError(f'{where}: "mcpServers" must be an object mapping names to servers.')
    return {name: parse_server(name, entry, where) for name, entry in servers.items()}


def parse_server(name: str, entry: Any, where: str = "MCP config") -> ServerConfig:
    """One server entry, checked field by field."""
    label = f"{where}: server {name!r}"
    if not _SERVER_NAME.match(name):
        raise McpConfigError(f"{label}: a name may use only letters, digits, '_' and '-'.")
    if not isinstance(entry, dict):
        raise McpConfigError(f"{label} must be an object.")
    command, url = entry.get("command"), entry.get("url")
    if bool(command) == bool(url):
        raise McpConfigError(f'{label} needs either "command" (stdio) or "url" (Streamable HTTP), not both.')
    if command is not None and not isinstance(command, str):
        raise McpConfigError(f'{label}: "command" must be a string.')
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise McpConfigError(f'{label}: "url" must be an http:// or https:// URL.')
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise McpConfigError(f'{label}: "args" must be a list of strings.')
    for key in ("env", "headers"):
        value = entry.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise McpConfigError(f'{label}: "{key}" must be an object of strings.')
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise McpConfigError(f'{label}: "cwd" must be a string.')
    timeout = entry.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise McpConfigError(f'{label}: "timeout" must be a positive number of seconds.')
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise McpConfigError(f'{label}: "enabled" must be true or false.')
    disabled = entry.get("disabledTools", [])
    if not isinstance(disabled, list) or not all(isinstance(tool, str) for tool in disabled):
        raise McpConfigError(f'{label}: "disabledTools" must be a list of tool names.')
    return ServerConfig(
        name=name,
        command=command or None,
        args=list(args),
        env=dict(entry.get("env", {})),
        cwd=cwd,
        url=url or None,
        headers=dict(entry.get("headers", {})),
        timeout=float(timeout),
        enabled=enabled,
        disabled_tools=list(disabled),
    )


def write_config(path: str | os.PathLike[str], servers: dict[str, ServerConfig]) -> None:
    """Save `servers` to `path`, keeping the file's other top-level keys; atomic (a crash loses nothing)."""
    target = Path(path)
    existing: dict[str, Any] = {}
    try:
        loaded = json.loads(target.read_text(encoding="utf-8"))
        existing = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    existing["mcpServers"] = {name: server.to_json() for name, server in servers.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".mcp-", suffix=".json")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(existing, file, indent=2, ensure_ascii=False)
            file.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def tool_name(server: str, tool: str) -> str:
    """`<server>__<tool>`, other characters as `_`; past 64 characters, cut and made unique with a hash."""
    name = _NAME_CHARS.sub("_", f"{server}__{tool}")
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha1(f"{server}\0{tool}".encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME_LENGTH - 9]}_{digest}"
