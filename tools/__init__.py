"""Functions the model may call in Tool mode: registry, JSON schemas, dispatch, built-in tools.

from tools import register_tool, get_tools, dispatch_tool

@register_tool
def get_weather(city_name: str) -> str:
    \"\"\"Get the current weather for `city_name`.\"\"\"

get_tools()                                        # OpenAI-style schemas of enabled tools
dispatch_tool("get_weather", '{"city_name": "Paris"}')  # -> ToolResult, never raises
"""

from typing import TYPE_CHECKING

from tools import builtin as _builtin  # noqa: F401  (registers the built-in tools)
from tools.dispatch import TOOL_CALL_TIMEOUT_S, dispatch_tool
from tools.loader import ToolLoadError, load_tools_dir
from tools.registry import (
    Tool,
    ToolRegistry,
    ToolStatus,
    default_registry,
    get_tool_status,
    get_tools,
    list_tools,
    register_tool,
)
from tools.result import ToolResult
from tools.schema import SchemaError

if TYPE_CHECKING:
    from tools.mcp_manager import ServerStatus


def load_mcp_servers(path: str | None = None, timeout: float | None = None) -> "list[ServerStatus]":
    """Connect the MCP config's enabled servers and register their tools (tools/mcp_manager.py).

    A wrapper so that `import tools` loads the MCP SDK only when MCP servers are used.
    """
    from tools.mcp_manager import load_mcp_servers as load

    return load(path, timeout)


__all__ = [
    "TOOL_CALL_TIMEOUT_S",  # one tool call's limit (the kernel's cell limit is kernel.limits.CELL_TIMEOUT_S)
    "SchemaError",
    "Tool",
    "ToolLoadError",
    "ToolRegistry",
    "ToolResult",
    "ToolStatus",
    "default_registry",
    "dispatch_tool",
    "get_tool_status",
    "get_tools",
    "list_tools",
    "load_mcp_servers",
    "load_tools_dir",
    "register_tool",
]
