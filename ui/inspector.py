"""The prompt inspector: for one round of a reply, what the model received and what it wrote.

The prompt is not stored: it is rendered again from the history before the reply, the
tools offered in that round and its parameters (all kept in the reply's meta by
run_turn), which gives the same ids the engine received. What the model wrote before
parsing is stored (`meta["raw_output"]`); what the parser made of it is the reply itself.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from glm_client import Client, ConfigError, Message
from glm_client.agent import round_prompt
from glm_client.dialects.base import ToolSchema, function_of
from ui.render import safe_markdown


def inspect_toggle(key: str) -> bool:
    return st.toggle("🔍 Inspect", key=key, help="The exact prompt of this round, the raw output and what was parsed")


def inspector_panel(
    client: Client, model_name: str, conversation: list[Message], index: int, offered: list[ToolSchema], key: str
) -> None:
    """The round of the reply at `index`, rendered by `client` (named `model_name`).

    `offered`: the tools the page has now, in which the round's tool names are looked up.
    """
    reply = conversation[index]
    meta = reply.meta
    offered_now = {function_of(tool)["name"] for tool in offered}
    missing = [name for name in meta.get("tools") or [] if name not in offered_now]
    params = meta.get("params") or {}
    written_by = meta.get("model")
    if written_by and written_by != model_name:
        st.caption(safe_markdown(f"Written by `{written_by}`; the prompt below is rendered for `{model_name}`."))
    if missing:
        st.caption(safe_markdown("Not offered any more, so not in the prompt below: " + ", ".join(missing)))
    try:
        view = round_prompt(client, conversation, index, offered)
    except (ConfigError, ValueError) as error:
        st.error(safe_markdown(f"The prompt could not be rendered: {error}"))
        view = None
    if view is not None:
        count = f"{view.token_count} tokens" if view.token_count is not None else "tokens counted by the server"
        st.markdown(f"**Prompt** · {count}")
        st.code(view.text, language=None, wrap_lines=True)
        if view.ids is not None and st.toggle("Token ids", key=f"{key}_ids"):
            st.code(json.dumps(view.ids), language=None, wrap_lines=True)
    st.markdown("**Parameters**")
    st.code(json.dumps(params, indent=2, ensure_ascii=False, default=str), language="json")
    st.markdown("**Raw output** (before parsing)")
    raw = meta.get("raw_output")
    st.code(raw if raw else "(not kept: the reply was stopped before it ended, or came from an import)", language=None)
    st.markdown("**Parsed**")
    st.code(json.dumps(parsed_events(reply), indent=2, ensure_ascii=False), language="json")


def parsed_events(reply: Message) -> list[dict[str, Any]]:
    """What the parser made of the raw output, as the events it gave, joined per kind."""
    events: list[dict[str, Any]] = []
    if reply.reasoning:
        events.append({"reasoning": reply.reasoning})
    if reply.content:
        events.append({"text": reply.content})
    for call in reply.tool_calls:
        event: dict[str, Any] = {"tool_call": call.name, "arguments": call.arguments}
        if call.parse_error:
            event["parse_error"] = call.parse_error
        events.append(event)
    return events
