"""MCP servers' tools in the registry, against real servers: the reference `mcp-server-time` over
stdio, and servers written with the official SDK (tests/mcp_test_servers.py) over Streamable HTTP
on 127.0.0.1 and over stdio."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp_types import (
    CallToolResult,
    EmbeddedResource,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from tools.dispatch import dispatch_tool
from tools.mcp_client import call_context
from tools.mcp_config import McpConfigError, ServerConfig, read_config, tool_name, write_config
from tools.mcp_content import to_tool_result
from tools.mcp_manager import McpServers, load_mcp_servers, set_tool_enabled
from tools.registry import ToolRegistry
from tools.result import MAX_RESULT_CHARS

TEST_SERVERS = str(Path(__file__).with_name("mcp_test_servers.py"))
TIME_SERVER = ServerConfig("time", command=sys.executable, args=["-m", "mcp_server_time"])

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def servers() -> Iterator[McpServers]:
    manager = McpServers(ToolRegistry())
    yield manager
    manager.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HttpServer:
    """tests/mcp_test_servers.py over Streamable HTTP on 127.0.0.1, restartable on the same port."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.cancel_mark = tmp_path / "cancelled"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MCP_TEST_CANCEL_MARK": str(self.cancel_mark)}
        self.process = subprocess.Popen(
            [sys.executable, TEST_SERVERS, "--port", str(self.port)], env=env, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the test MCP server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def http_server(tmp_path) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http_tools(servers, http_server) -> McpServers:
    status = servers.connect(ServerConfig("t", url=http_server.url, timeout=3))
    assert status.connected, status
    return servers


def call(servers: McpServers, name: str, arguments: dict) -> object:
    return dispatch_tool(name, arguments, registry=servers.registry)


# --- mcp-server-time over stdio -------------------------------------------------------------------
def test_time_server_tools_are_registered_with_their_schemas(servers):
    status = servers.connect(TIME_SERVER)
    assert status.connected and set(status.tools) == {"time__get_current_time", "time__convert_time"}
    schema = servers.registry.get("time__get_current_time").schema()["function"]
    assert schema["parameters"]["required"] == ["timezone"]
    assert "timezone" in schema["description"].lower()


def test_time_server_answers_a_call_with_a_timezone(servers):
    servers.connect(TIME_SERVER)
    result = call(servers, "time__get_current_time", {"timezone": "Asia/Tokyo"})
    assert result.ok, result.text
    answer = json.loads(result.text)
    assert answer["timezone"] == "Asia/Tokyo" and answer["datetime"].endswith("+09:00")


def test_an_invalid_timezone_is_an_error_observation(servers):
    servers.connect(TIME_SERVER)
    result = call(servers, "time__get_current_time", {"timezone": "Mars/Olympus_Mons"})
    assert not result.ok
    assert "reported an error" in result.text and "Mars/Olympus_Mons" in result.text


def test_arguments_are_validated_against_the_input_schema_before_the_server_sees_them(servers):
    servers.connect(TIME_SERVER)
    result = call(servers, "time__get_current_time", {"zone": "UTC"})
    assert not result.ok and "Invalid arguments" in result.text and "timezone (string, required)" in result.text


def test_a_missing_command_shows_the_server_as_failed_with_the_reason(servers):
    status = servers.connect(ServerConfig("ghost", command="no-such-mcp-server-command"))
    assert status.state == "failed" and status.error == "command not found: no-such-mcp-server-command"
    assert "ghost__" not in " ".join(tool.name for tool in servers.registry.list_tools(include_disabled=True))


def test_a_server_that_dies_at_start_is_failed_with_the_tail_of_its_stderr(servers):
    script = "import sys; sys.stderr.write('cannot open the database: no such file'); sys.exit(3)"
    status = servers.connect(ServerConfig("broken", command=sys.executable, args=["-c", script]))
    assert status.state == "failed" and status.error
    assert status.stderr_tail.endswith("cannot open the database: no such file")


def test_stdio_servers_get_their_env_but_not_the_apps_secrets(servers, monkeypatch):
    secrets = {"SERVER_API_KEY": "sk-server", "APP_PASSWORD": "hunter2", "OPENAI_API_KEY": "sk-openai"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    config = ServerConfig(
        "env", command=sys.executable, args=[TEST_SERVERS, "--stdio"], env={"MCP_TEST_CANARY": "configured"}
    )
    assert servers.connect(config).connected
    result = call(servers, "env__environment", {})
    assert result.ok, result.text
    seen = json.loads(result.text)
    assert seen["canary"] == "configured"
    assert "PATH" in seen["names"]
    assert not set(secrets) & set(seen["names"])
    assert not any(value in result.text for value in secrets.values())


# --- configuration and names -----------------------------------------------------------------
def test_names_are_server_and_tool_cut_to_the_function_name_rule():
    assert tool_name("time", "get_current_time") == "time__get_current_time"
    assert tool_name("my server", "do.it/now") == "my_server__do_it_now"
    long_a, long_b = tool_name("s", "x" * 80 + "a"), tool_name("s", "x" * 80 + "b")
    assert len(long_a) == 64 and long_a != long_b and long_a.startswith("s__xxx")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"mcpServers": {"a": {"command": "x",}}}', "is not valid JSON: Expecting property name"),
        ('{"mcpServers": []}', '"mcpServers" must be an object'),
        ('{"mcpServers": {"a": {"args": ["x"]}}}', 'needs either "command"'),
        ('{"mcpServers": {"a": {"url": "ftp://host/mcp"}}}', "must be an http:// or https:// URL"),
        ('{"mcpServers": {"a": {"command": "x", "timeout": -1}}}', '"timeout" must be a positive number'),
        ('{"mcpServers": {"a b": {"command": "x"}}}', "a name may use only"),
    ],
)
def test_a_malformed_config_is_one_sentence_naming_the_problem(tmp_path, text, problem):
    path = tmp_path / "mcp.json"
    path.write_text(text)
    with pytest.raises(McpConfigError) as raised:
        read_config(path)
    message = str(raised.value)
    assert problem in message and str(path) in message and "\n" not in message


def test_config_round_trips_and_keeps_other_keys(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"other": 1, "mcpServers": {}}))
    configs = {
        "time": ServerConfig("time", command="uvx", args=["mcp-server-time"], env={"TZ": "UTC"}, timeout=5),
        "web": ServerConfig("web", url="http://127.0.0.1:1/mcp", headers={"Authorization": "Bearer x"}, enabled=False),
    }
    write_config(path, configs)
    assert json.loads(path.read_text())["other"] == 1
    assert read_config(path) == configs


def test_load_mcp_servers_reads_the_config_file_and_skips_disabled_servers(tmp_path, servers):
    path = tmp_path / "mcp.json"
    entry = {"command": sys.executable, "args": ["-m", "mcp_server_time"], "disabledTools": ["convert_time"]}
    path.write_text(json.dumps({"mcpServers": {"time": entry, "off": {"command": "nothing", "enabled": False}}}))
    statuses = {status.name: status for status in load_mcp_servers(path, servers=servers)}
    assert statuses["time"].connected and statuses["off"].state == "disabled"
    offered = [schema["function"]["name"] for schema in servers.registry.get_tools()]
    assert offered == ["time__get_current_time"]  # convert_time is switched off in the file
    set_tool_enabled(path, "time", "time__convert_time", True, servers)
    assert "time__convert_time" in [schema["function"]["name"] for schema in servers.registry.get_tools()]
    assert "disabledTools" not in json.loads(path.read_text())["mcpServers"]["time"]


# --- content mapping -----------------------------------------------------------------------
def test_resources_links_and_caps_become_text():
    result = CallToolResult(
        content=[
            TextContent(type="text", text="x" * (MAX_RESULT_CHARS + 10)),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(uri="file:///notes.md", mime_type="text/markdown", text="# Notes"),
            ),
            ResourceLink(type="resource_link", uri="https://example.com/a", name="a", mime_type="text/html"),
        ]
    )
    mapped = to_tool_result(result, tool="s__t")
    assert mapped.ok and mapped.truncated and len(mapped.text) < MAX_RESULT_CHARS + 200
    full = to_tool_result(CallToolResult(content=result.content[1:]), tool="s__t")
    assert "[resource file:///notes.md (text/markdown)]\n# Notes" in full.text
    assert "Resource links:\n- a: https://example.com/a (text/html)" in full.text


# --- servers written for the tests, over Streamable HTTP ---------------------------------------
def test_text_image_and_structured_content(http_tools):
    result = call(http_tools, "t__rich", {"label": "x"})
    assert result.ok and result.text == "hello x\nsecond part"
    assert len(result.images) == 1 and result.images[0].startswith(b"\x89PNG")
    structured = call(http_tools, "t__structured", {"label": "y"})
    assert json.loads(structured.text) == {"label": "y", "ok": True}


def test_is_error_becomes_an_error_observation(http_tools):
    result = call(http_tools, "t__fail", {"reason": "no disk"})
    assert not result.ok and "cannot do that: no disk" in result.text


def test_a_call_past_the_servers_timeout_is_a_timeout_observation_and_is_cancelled(http_tools, http_server):
    started = time.monotonic()
    result = call(http_tools, "t__sleep", {"seconds": 30})
    assert not result.ok and "timed out after 3 s" in result.text
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5  # the server learns of it from notifications/cancelled
    while not http_server.cancel_mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_server.cancel_mark.read_text() == "cancelled"
    assert call(http_tools, "t__rich", {"label": "after"}).ok  # the session is still good


def test_the_turns_cancel_event_stops_the_call_and_cancels_it_on_the_server(http_tools, http_server):
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with call_context(cancel=stop):
        result = call(http_tools, "t__sleep", {"seconds": 30})
    assert not result.ok and "stopped by the user" in result.text and time.monotonic() - started < 2.5
    deadline = time.monotonic() + 5
    while not http_server.cancel_mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_server.cancel_mark.exists()


def test_progress_notifications_reach_the_listener(http_tools):
    seen: list[tuple] = []
    with call_context(on_progress=lambda *update: seen.append(update)):
        result = call(http_tools, "t__progress", {"steps": 3})
    assert result.ok and result.text == "done after 3 steps"
    assert seen == [(1.0, 3.0, "step 1 of 3"), (2.0, 3.0, "step 2 of 3"), (3.0, 3.0, "step 3 of 3")]


def test_a_server_that_exits_mid_call_gives_an_error_and_the_next_call_reconnects(http_tools, http_server):
    result = call(http_tools, "t__crash", {})
    assert not result.ok and "reconnected at the next call" in result.text
    http_server.process.wait(10)
    http_server.start()  # the server is back (as a supervisor would bring it back)
    again = call(http_tools, "t__rich", {"label": "back"})
    assert again.ok, again.text
    assert again.text.startswith("hello back")


def test_a_stdio_server_that_exits_mid_call_is_restarted_at_the_next_call(servers):
    config = ServerConfig("s", command=sys.executable, args=[TEST_SERVERS, "--stdio"])
    assert servers.connect(config).connected
    crashed = call(servers, "s__crash", {})
    assert not crashed.ok and "reconnected at the next call" in crashed.text
    assert call(servers, "s__rich", {"label": "again"}).ok


def test_an_unreachable_url_is_failed_with_a_reason(servers):
    status = servers.connect(ServerConfig("down", url=f"http://127.0.0.1:{free_port()}/mcp", timeout=5))
    assert status.state == "failed" and status.error
