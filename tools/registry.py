"""The registry of functions the model may call, and the `@register_tool` decorator."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from jsonschema import Draft202012Validator

from tools.schema import function_schema

if TYPE_CHECKING:
    from glm_client.config import Settings

F = TypeVar("F", bound=Callable[..., Any])


def current_settings() -> Settings:
    """The settings as the environment says now.

    Read on every check, not once: the registry is process-wide, so no settings object is
    handed to it, and an operator may flip ENABLE_<NAME>_TOOL without restarting. Imported
    here so that `import tools` stays free of glm_client.
    """
    from glm_client.config import Settings

    return Settings.from_env()


@dataclass
class Tool:
    """A registered function with the schema the model sees.

    A `dangerous` tool (one that can harm the host, like `shell`) stays off until the
    operator sets `ENABLE_<NAME>_TOOL=1` (parsed by glm_client.config.Settings); it is read
    on every check, so it can be flipped without restarting. `enabled=False` switches any tool off.

    An `isolated` tool runs in a worker process that a timeout kills (tools/isolation.py);
    `isolated=False` runs it in a thread of the app, for tools that only wait on a
    subprocess with their own timeout and need nothing a worker would have to import.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    dangerous: bool = False
    enabled: bool = True
    isolated: bool = True
    # Overrides the dispatcher's limit: an MCP tool has its server's timeout (tools/mcp_config.py).
    timeout: float | None = None
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.parameters)  # a broken schema fails at registration
        self.validator = Draft202012Validator(self.parameters)

    @property
    def enable_env_var(self) -> str | None:
        """The environment variable that turns on a dangerous tool."""
        if not self.dangerous:
            return None
        from glm_client.config import tool_switch  # here: `import tools` stays free of glm_client

        return tool_switch(self.name)

    @property
    def disabled_reason(self) -> str | None:
        """Why the tool can't be called now, or None when it can."""
        if not self.enabled:
            return "disabled by the operator"
        if not self.dangerous:
            return None
        from glm_client.config import ConfigError

        try:
            settings = current_settings()
        except ConfigError as error:  # a bad value keeps a dangerous tool off, and says why
            return f"disabled: {str(error).rstrip('.')}"
        if not settings.tool_enabled(self.name):
            return f"disabled by the operator (set {self.enable_env_var}=1 to enable it)"
        return None

    @property
    def is_enabled(self) -> bool:
        return self.disabled_reason is None

    def schema(self) -> dict[str, Any]:
        """OpenAI-style function schema."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ToolStatus:
    """One line of the sidebar: which tool, whether it can be called, and if not, why."""

    name: str
    description: str
    enabled: bool
    dangerous: bool
    reason: str | None


class ToolRegistry:
    """Tools by name. Registering a name again replaces the earlier tool (so reloading a file is safe)."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._lock = threading.Lock()

    @overload
    def register(self, function: F, /) -> F: ...
    @overload
    def register(
        self,
        function: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        dangerous: bool = False,
        enabled: bool = True,
        isolated: bool = True,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        function: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        dangerous: bool = False,
        enabled: bool = True,
        isolated: bool = True,
    ) -> Any:
        """Register a function as a tool; usable as `@register` or `@register(name=..., dangerous=True)`.

        Returns the function unchanged, so it stays callable as plain Python.
        """

        def decorate(func: F) -> F:
            schema = function_schema(func)
            tool = Tool(
                name=name or func.__name__,
                description=description if description is not None else schema.description,
                parameters=schema.parameters,
                function=func,
                dangerous=dangerous,
                enabled=enabled,
                isolated=isolated,
            )
            with self._lock:
                self._tools[tool.name] = tool
            return func

        return decorate if function is None else decorate(function)

    def add(self, tool: Tool) -> None:
        """Register a ready-made Tool (an MCP server's tool, whose schema comes from the server)."""
        with self._lock:
            self._tools[tool.name] = tool

    def unregister(self, name: str) -> None:
        with self._lock:
            self._tools.pop(name, None)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """The operator's switch (e.g. a sidebar checkbox). Raises KeyError for an unknown name."""
        self._tools[name].enabled = enabled

    def list_tools(self, include_disabled: bool = False) -> list[Tool]:
        tools = sorted(self._tools.values(), key=lambda tool: tool.name)
        return tools if include_disabled else [tool for tool in tools if tool.is_enabled]

    def get_tools(self) -> list[dict[str, Any]]:
        """Schemas of the tools the model may call now."""
        return [tool.schema() for tool in self.list_tools()]

    def get_tool_status(self) -> list[ToolStatus]:
        return [
            ToolStatus(tool.name, tool.description, tool.is_enabled, tool.dangerous, tool.disabled_reason)
            for tool in self.list_tools(include_disabled=True)
        ]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)


default_registry = ToolRegistry()
register_tool = default_registry.register


def get_tools() -> list[dict[str, Any]]:
    """OpenAI-style schemas of the enabled tools in the default registry."""
    return default_registry.get_tools()


def list_tools(include_disabled: bool = False) -> list[Tool]:
    return default_registry.list_tools(include_disabled)


def get_tool_status() -> list[ToolStatus]:
    """Every tool in the default registry, with whether it is enabled and why not."""
    return default_registry.get_tool_status()
