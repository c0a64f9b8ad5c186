"""The workbench's Python tools as an MCP server, for any MCP client (Claude Desktop, Open WebUI, another workbench).

    python -m tools.mcp_server                     # stdio
    python -m tools.mcp_server --http --port 8765  # Streamable HTTP on http://127.0.0.1:8765/mcp
    SERVER_API_KEY=secret python -m tools.mcp_server --http   # clients must send "Bearer secret"

It offers the enabled tools of the registry (the built-in ones and TOOLS_DIR's), with their
schemas, and runs each call through the same validated dispatch as Tool mode (timeouts,
worker processes, size caps). A failed call is an `isError` result; images become image content.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from tools.dispatch import dispatch_tool
from tools.registry import ToolRegistry, default_registry

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]
DEFAULT_PORT = 8765


def create_server(registry: ToolRegistry | None = None) -> Server[Any]:
    """An MCP server offering `registry`'s enabled tools (the default registry when None)."""
    tools = registry or default_registry

    async def list_tools(
        _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=tool.name, description=tool.description, input_schema=tool.parameters)
                for tool in tools.list_tools()
            ]
        )

    async def call_tool(_ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await anyio.to_thread.run_sync(
            lambda: dispatch_tool(params.name, params.arguments or {}, registry=tools)
        )
        content: list[types.ContentBlock] = [types.TextContent(type="text", text=result.text)]
        content += [
            types.ImageContent(type="image", data=base64.b64encode(image).decode("ascii"), mime_type="image/png")
            for image in result.images
        ]
        return types.CallToolResult(content=content, is_error=not result.ok)

    return Server("glm-workbench", on_list_tools=list_tools, on_call_tool=call_tool)


def require_bearer(app: ASGIApp, api_key: str) -> ASGIApp:
    """Refuse HTTP requests without `Authorization: Bearer <api_key>` (401), as the API server does."""
    expected = api_key.encode()

    async def guarded(
        scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected):
                body = b'{"error": "Missing or incorrect API key: send SERVER_API_KEY as Authorization: Bearer <key>."}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def http_app(server: Server[Any], api_key: str | None) -> ASGIApp:
    """The Streamable HTTP app at /mcp, behind the bearer check when there is a key."""
    app: ASGIApp = server.streamable_http_app(host="127.0.0.1")
    return require_bearer(app, api_key) if api_key else app


async def serve_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.mcp_server", description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP on 127.0.0.1 instead of stdio")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)

    import tools  # noqa: F401  (registers the built-in tools)
    from glm_client.config import Settings
    from tools.loader import load_tools_dir

    settings = Settings.from_env()
    for problem in load_tools_dir(settings.tools_dir):
        print(f"[tools] {problem}", file=sys.stderr)
    server = create_server()
    if not args.http:
        anyio.run(serve_stdio, server)
        return
    import uvicorn

    api_key = settings.server_api_key or None
    names = ", ".join(tool.name for tool in default_registry.list_tools())
    print(
        f"MCP server on http://127.0.0.1:{args.port}/mcp with tools: {names}"
        + (" (clients must send the SERVER_API_KEY key)" if api_key else ""),
        file=sys.stderr,
    )
    uvicorn.run(http_app(server, api_key), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
