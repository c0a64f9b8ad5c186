"""Tools for chat templates that know nothing of tools (SmolLM2, Llama 2, ...).

Such a template renders only system, user and assistant turns. So the tools are
described in the system prompt, each call is replayed as the text the model wrote
for it, and each result as a `<tool_response>` block in a user turn; the parser in
`json_calls` reads the calls back from the model's reply.
"""

from __future__ import annotations

import json
import re

from glm_client.dialects.base import ToolSchema
from glm_client.messages import Message, ToolCall

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
CALL_FORMAT = '<tool_call>{"name": ..., "arguments": {...}}</tool_call>'

_TOOLS_INSTRUCTIONS = """# Tools

You can call functions to help answer the user. Their JSON schemas:
<tools>
{schemas}
</tools>

To call a function, write exactly this, one block per call:
<tool_call>{{"name": "<function name>", "arguments": {{<the arguments as a JSON object>}}}}</tool_call>
Then stop: the result comes back in a <tool_response></tool_response> block. Answer the user from it, \
or call again if you need more."""

# `tools` used inside a jinja tag or expression, not merely in the prompt's prose.
_JINJA_USES_TOOLS = re.compile(r"\{[{%](?:(?![%}]\}).)*?\btools\b", re.DOTALL)


def tools_system_prompt(tools: list[ToolSchema], base_system: str | None = None) -> str:
    """A system prompt that describes `tools` and the `<tool_call>` format, after `base_system`."""
    schemas = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    instructions = _TOOLS_INSTRUCTIONS.format(schemas=schemas)
    if base_system and base_system.strip():
        return f"{base_system.strip()}\n\n{instructions}"
    return instructions


def render_call_for_history(call: ToolCall) -> str:
    """The call as the model wrote it (its `raw` text), or in the canonical `<tool_call>` form.

    An empty `raw` is a call that shared its block with the previous one (a JSON list),
    so it renders as nothing: the block was already replayed once.
    """
    if call.raw is not None:
        return call.raw
    payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}{payload}{TOOL_CALL_CLOSE}"


def render_observation_for_history(message: Message) -> str:
    """A tool result as text for a user turn: `<tool_response name="f">...</tool_response>`."""
    name = f' name="{message.name}"' if message.name else ""
    return f"<tool_response{name}>\n{message.model_text()}\n</tool_response>"


def template_supports_tools(chat_template: str | None) -> bool:
    """Whether a jinja chat template renders a `tools` argument (a heuristic on its source)."""
    return chat_template is not None and _JINJA_USES_TOOLS.search(chat_template) is not None
