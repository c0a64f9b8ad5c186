"""The bridge from the agent loop to this registry: a ToolCall in, an observation Message out."""

from __future__ import annotations

from glm_client.agent import Executor
from glm_client.messages import Message, ToolCall
from tools.dispatch import TOOL_CALL_TIMEOUT_S, dispatch_tool
from tools.registry import ToolRegistry


def tool_executor(registry: ToolRegistry | None = None, timeout: float = TOOL_CALL_TIMEOUT_S) -> Executor:
    """An executor for `glm_client.agent.run_turn` that dispatches calls to registered tools."""

    def execute(call: ToolCall) -> Message:
        result = dispatch_tool(call.name, call.arguments, timeout, registry=registry)
        return Message.observation(
            result.text, name=call.name, tool_call_id=call.id, images=result.images, is_error=not result.ok
        )

    return execute
