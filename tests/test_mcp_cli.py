"""`python -m glm_client.cli --tools` offers and calls MCP servers' tools (MCP_CONFIG), as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from glm_client import ToolCall
from tests.test_cli import ROOT, scripted  # noqa: F401  (the fixture: a scripted model behind the API server)

pytestmark = pytest.mark.slow


def run_cli(url: str, config: str, lines: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_BASE_URL": url, "PYTHONUNBUFFERED": "1", "MCP_CONFIG": config}
    env.pop("MODEL_PATH", None)
    return subprocess.run(
        [sys.executable, "-m", "glm_client.cli", "--tools"],
        cwd=ROOT,
        env=env,
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_tools_mode_offers_and_calls_an_mcp_servers_tool(scripted, tmp_path):  # noqa: F811
    config = tmp_path / "mcp.json"
    entry = {"command": sys.executable, "args": ["-m", "mcp_server_time"]}
    config.write_text(json.dumps({"mcpServers": {"time": entry}}))
    scripted.queue([ToolCall("time__get_current_time", {"timezone": "Asia/Tokyo"})], "It is late in Tokyo.")
    done = run_cli(scripted.url, str(config), ["What time is it in Tokyo?"])
    assert done.returncode == 0, done.stderr
    messages, tools, _ = scripted.requests[1]
    assert "time__get_current_time" in [tool["function"]["name"] for tool in tools]
    observation = messages[-1]
    assert observation.role == "observation" and observation.name == "time__get_current_time"
    assert json.loads(observation.content)["timezone"] == "Asia/Tokyo"


def test_a_malformed_config_is_one_line_and_the_chat_goes_on(scripted, tmp_path):  # noqa: F811
    config = tmp_path / "mcp.json"
    config.write_text("{not json")
    scripted.queue("Hello.")
    done = run_cli(scripted.url, str(config), ["Hi"])
    assert done.returncode == 0, done.stderr
    assert f"[mcp] MCP config {config} is not valid JSON" in done.stderr
    assert "Assistant: Hello." in done.stdout
