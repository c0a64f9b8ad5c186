"""The workbench's own MCP server (`python -m tools.mcp_server`), listed and called with the official SDK client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tools.dispatch import dispatch_tool
from tools.mcp_config import ServerConfig
from tools.mcp_manager import McpServers
from tools.registry import ToolRegistry

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def servers():
    manager = McpServers(ToolRegistry())
    yield manager
    manager.close()


def test_over_stdio_the_enabled_python_tools_are_listed_and_called(servers):
    config = ServerConfig("wb", command=sys.executable, args=["-m", "tools.mcp_server"], cwd=str(ROOT))
    status = servers.connect(config)
    assert status.connected, status
    assert {"wb__calculator", "wb__unit_convert"} <= set(status.tools)
    assert "wb__shell" not in status.tools  # a dangerous tool the operator did not enable is not offered
    result = dispatch_tool("wb__calculator", {"expression": "6*7"}, registry=servers.registry)
    assert result.ok and "42" in result.text
    failed = dispatch_tool("wb__calculator", {"expression": "1/0"}, registry=servers.registry)
    assert not failed.ok  # the workbench's error comes back as isError


@pytest.fixture
def http_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SERVER_API_KEY": "s3cret-key"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.mcp_server", "--http", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


def test_over_http_a_bearer_token_is_required(servers, http_server):
    refused = httpx.post(http_server, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert refused.status_code == 401
    wrong = servers.connect(ServerConfig("bad", url=http_server, headers={"Authorization": "Bearer nope"}, timeout=10))
    assert wrong.state == "failed"
    config = ServerConfig("wb", url=http_server, headers={"Authorization": "Bearer s3cret-key"}, timeout=10)
    status = servers.connect(config)
    assert status.connected, status
    result = dispatch_tool("wb__calculator", {"expression": "2**10"}, registry=servers.registry)
    assert result.ok and "1024" in result.text
