"""End to end: the embedded model, forced to call an MCP server's tool, reads its observation next round."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from glm_client import Message, ToolCall
from glm_client.agent import ObservationEvent, run_turn
from tools.executor import tool_executor
from tools.mcp_config import ServerConfig
from tools.mcp_manager import McpServers
from tools.registry import ToolRegistry

TEST_SERVERS = str(Path(__file__).with_name("mcp_test_servers.py"))


@pytest.mark.model
def test_a_forced_call_to_an_mcp_tool_and_its_observation_in_the_next_prompt(embedded_client):
    servers = McpServers(ToolRegistry())
    try:
        status = servers.connect(ServerConfig("test", command=sys.executable, args=[TEST_SERVERS, "--stdio"]))
        assert status.connected, status
        offered = servers.registry.get_tools()
        prompts: list[list[Message]] = []
        original_stream = embedded_client.stream

        def recording_stream(messages, tools=None, **params):
            prompts.append(list(messages))
            return original_stream(messages, tools, **params)

        conversation = [Message.user("Shout: hello world")]
        embedded_client.stream = recording_stream
        try:
            events = list(
                run_turn(
                    embedded_client,
                    conversation,
                    tool_executor(servers.registry),
                    offered,
                    max_rounds=2,
                    force_tool="test__shout",
                    temperature=0.0,
                    max_new_tokens=200,  # room for a whole call: its string may hold 120 characters
                )
            )
        finally:
            del embedded_client.stream
    finally:
        servers.close()
    call = next(event for event in events if isinstance(event, ToolCall))
    assert call.name == "test__shout" and isinstance(call.arguments.get("text"), str)
    observation = next(event for event in events if isinstance(event, ObservationEvent)).message
    assert (observation.name, observation.is_error) == ("test__shout", False)
    assert observation.content == call.arguments["text"].upper()  # the server's answer to this very call
    assert prompts[1][-1].role == "observation" and prompts[1][-1].content == observation.content
