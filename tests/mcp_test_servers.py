"""MCP servers written for the tests, on the official SDK: `python tests/mcp_test_servers.py --port N`
serves them over Streamable HTTP on 127.0.0.1; `--stdio` over stdio.

- `rich`: text, an image and structuredContent; `structured`: structuredContent with empty content;
- `sleep`: sleeps `seconds` (past a timeout), and says whether it was cancelled;
- `crash`: the process exits in the middle of the call;
- `progress`: reports progress `steps` times before answering;
- `environment`: the names (and, for the test's canary, the value) of its environment variables;
- `fail`: returns isError;
- `shout`: its text in capitals (a result a test can predict from the call).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent

# A 1x1 red PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
CANCELLED_MARK = os.environ.get("MCP_TEST_CANCEL_MARK", "")

server = MCPServer("workbench-test", log_level="WARNING")


@server.tool()
def rich(label: str) -> CallToolResult:
    """Text, an image and structured content."""
    return CallToolResult(
        content=[
            TextContent(type="text", text=f"hello {label}"),
            ImageContent(type="image", data=base64.b64encode(PNG).decode(), mime_type="image/png"),
            TextContent(type="text", text="second part"),
        ],
        structured_content={"label": label, "count": 2},
    )


@server.tool()
def structured(label: str) -> CallToolResult:
    """Only structured content."""
    return CallToolResult(content=[], structured_content={"label": label, "ok": True})


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer; a cancelled call leaves a mark file the test reads."""
    try:
        await asyncio.sleep(seconds)
    except BaseException:
        if CANCELLED_MARK:
            Path(CANCELLED_MARK).write_text("cancelled")
        raise
    return f"slept {seconds}"


@server.tool()
async def crash() -> str:
    """Exit the process in the middle of the call."""
    await asyncio.sleep(0.2)
    os._exit(1)


@server.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report progress `steps` times, then answer."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step} of {steps}")
        await asyncio.sleep(0.2)
    return f"done after {steps} steps"


@server.tool()
def environment() -> dict[str, Any]:
    """The environment this server was started with."""
    return {"names": sorted(os.environ), "canary": os.environ.get("MCP_TEST_CANARY", "")}


@server.tool()
def fail(reason: str) -> str:
    """Raise, which the SDK returns as isError."""
    raise ToolError(f"cannot do that: {reason}")


@server.tool()
def shout(text: str) -> str:
    """Say the text louder."""
    return text.upper()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stdio", action="store_true")
    options = parser.parse_args()
    if options.stdio:
        server.run("stdio")
    else:
        print(f"serving on {options.port}", file=sys.stderr, flush=True)
        server.run("streamable-http", host="127.0.0.1", port=options.port)
