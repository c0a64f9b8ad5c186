"""The Tool page's "MCP servers" section in AppTest, with the real mcp-server-time over stdio."""

from __future__ import annotations

import json
import shlex
import sys

import pytest

from tests.pages import open_page
from tools.mcp_manager import default_servers

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def mcp_file(monkeypatch, tmp_path, page_model):
    path = tmp_path / "mcp.json"
    monkeypatch.setenv("MCP_CONFIG", str(path))
    yield path
    default_servers.close()


def test_add_a_server_see_its_tools_and_disable_one(mcp_file, page_model):
    app = open_page("tool.py")
    assert not app.exception
    app.text_input(key="mcp_new_name").set_value("time")
    app.text_input(key="mcp_new_target").set_value(f"{shlex.quote(sys.executable)} -m mcp_server_time")
    app.button[[b.label for b in app.button].index("Add server")].click().run()
    assert not app.exception
    saved = json.loads(mcp_file.read_text())["mcpServers"]["time"]
    assert saved == {"command": sys.executable, "args": ["-m", "mcp_server_time"]}
    sidebar = " ".join(md.value for md in app.sidebar.markdown)
    assert "🟢 **time** · connected" in sidebar
    tool_box = app.checkbox(key="mcp_tool_time__get_current_time")
    assert tool_box.value is True
    assert "`time__get_current_time`" in " ".join(caption.value for caption in app.caption)

    tool_box.uncheck().run()
    assert not app.exception
    assert json.loads(mcp_file.read_text())["mcpServers"]["time"]["disabledTools"] == ["get_current_time"]
    offered = " ".join(caption.value for caption in app.caption)
    assert "`time__get_current_time`" not in offered and "`time__convert_time`" in offered


def test_a_malformed_config_is_one_sentence_on_the_page(mcp_file, page_model):
    mcp_file.write_text('{"mcpServers": {"x": {"command": 1}}}')
    app = open_page("tool.py")
    assert not app.exception
    errors = [error.value for error in app.sidebar.error]
    assert any("server 'x': \"command\" must be a string." in error for error in errors)


def test_a_failed_server_shows_its_reason(mcp_file, page_model):
    app = open_page("tool.py")
    app.text_input(key="mcp_new_name").set_value("ghost")
    app.text_input(key="mcp_new_target").set_value("no-such-mcp-command --flag")
    app.button[[b.label for b in app.button].index("Add server")].click().run()
    assert not app.exception
    errors = " ".join(error.value for error in app.sidebar.error)
    assert "ghost: command not found: no-such-mcp-command" in errors
