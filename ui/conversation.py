"""Showing a conversation: the history, and a turn as its events arrive.

Model text goes through st.markdown without unsafe_allow_html, so HTML the model
writes is shown, never executed; Markdown and $LaTeX$ render.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import streamlit as st

from glm_client import Done, Message, Notice, TextDelta, ToolCall, ToolCallStart
from glm_client.agent import AgentEvent, ObservationEvent, RoundLimitReached

CURSOR = "▌"
AVATARS = {"user": "🧑", "assistant": "🤖"}


def render_history(conversation: list[Message]) -> None:
    """Every message; an assistant reply and the observations of its calls share one bubble."""
    bubble, bubble_role = None, None
    for message in conversation:
        if message.role == "system":
            continue
        role = "user" if message.role == "user" else "assistant"
        if bubble is None or role == "user" or bubble_role != role:
            bubble, bubble_role = st.chat_message(role, avatar=AVATARS[role]), role
        with bubble:
            if message.role == "user":
                st.markdown(message.content)
            elif message.role == "assistant":
                render_assistant(message)
            else:
                render_observation(message)
            for notice in message.meta.get("notices", []):
                st.info(notice, icon="ℹ️")


def render_assistant(message: Message) -> None:
    if message.content:
        st.markdown(message.content)
    for call in message.tool_calls:
        with st.expander(call_title(call), icon="🔧"):
            render_call(call)
    if message.meta.get("error"):
        st.error(message.meta["error"])
    elif message.meta.get("interrupted"):
        st.caption("⏹ Stopped before the reply was finished.")
    elif message.meta.get("finish_reason") == "length":
        st.caption("✂️ The reply reached the max-new-tokens limit.")


def render_observation(message: Message) -> None:
    label = f"{'❌' if message.is_error else '📤'} Result of `{message.name or 'call'}`"
    with st.expander(label, expanded=bool(message.images)):
        render_observation_body(message)


def render_observation_body(message: Message) -> None:
    if message.content:
        st.code(message.content, language="text")
    for image in message.images:
        st.image(image)


def call_title(call: ToolCall) -> str:
    if call.parse_error:
        return f"Malformed call {call.name or ''}".strip()
    if call.is_interpreter:
        return "Code"
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return f"{call.name}({arguments[:80]}{'…' if len(arguments) > 80 else ''})"


def render_call(call: ToolCall) -> None:
    if call.parse_error:
        st.error(call.parse_error)
        if call.raw:
            st.code(call.raw, language="text")
    elif call.is_interpreter:
        st.code(call.code, language="python")
    else:
        st.json(call.arguments)


def stream_turn(events: Iterator[AgentEvent]) -> None:
    """Render one agent turn live inside an assistant bubble."""
    with st.chat_message("assistant", avatar=AVATARS["assistant"]):
        text_box = st.empty()
        text = ""
        status = None
        for event in events:
            if isinstance(event, TextDelta):
                text += event.text
                text_box.markdown(text + CURSOR)
            elif isinstance(event, ToolCallStart):
                text_box.markdown(text)
                status = st.status(f"Calling `{event.name}`…" if event.name else "Calling a tool…", state="running")
            elif isinstance(event, ToolCall):
                text_box.markdown(text)
                status = status or st.status("Calling a tool…", state="running")
                status.update(label=f"Running {call_title(event)}…", state="running")
                with status:
                    render_call(event)
            elif isinstance(event, ObservationEvent):
                assert status is not None
                state = "error" if event.message.is_error else "complete"
                status.update(
                    label=f"{call_title(event.call)} · {event.duration_s:.2f} s",
                    state=state,
                    expanded=bool(event.message.images),
                )
                with status:
                    render_observation_body(event.message)
                status = None
                text = ""
                text_box = st.empty()  # the next round writes below the call
            elif isinstance(event, Notice):
                st.info(event.message, icon="ℹ️")
            elif isinstance(event, RoundLimitReached):
                pass  # the Notice that follows says it
            elif isinstance(event, Done):
                text_box.markdown(text)
                if event.finish_reason == "error":
                    st.error(event.error or "The model failed.")
                elif event.finish_reason == "length":
                    st.caption("✂️ The reply reached the max-new-tokens limit.")
