"""Sidebar controls shared by the pages: sampling parameters and model facts."""

from __future__ import annotations

from typing import Any

import streamlit as st

from glm_client import Client, GenerationParams, Message
from ui.render import safe_markdown

# The sliders start at GenerationParams' defaults, the one place they are written.
_PARAMS = GenerationParams()
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": _PARAMS.temperature,
    "top_p": _PARAMS.top_p,
    "max_new_tokens": _PARAMS.max_new_tokens,
    "repetition_penalty": _PARAMS.repetition_penalty,
    "loop_stop_tokens": _PARAMS.loop_stop_tokens,
}
# The "Thinking" toggle starts on: a thinking model thinks unless told not to (its templates' default).
THINKING_DEFAULTS: dict[str, Any] = {"enable_thinking": True}


def sampling_controls(mode: str, thinking_switch: bool = False) -> dict[str, Any]:
    """Sliders for one mode, their values set beforehand in session state (ui.page); returns the generation params.

    `thinking_switch`: the model takes `enable_thinking`, so a "Thinking" toggle is shown and sent.
    """
    thinking: dict[str, Any] = {}
    if thinking_switch:
        thinking["enable_thinking"] = st.sidebar.toggle(
            "Thinking",
            key=f"{mode}_enable_thinking",
            help="Let the model think before it answers (shown apart); its thinking counts against Max new tokens",
        )
    with st.sidebar.expander("Sampling", expanded=False):
        temperature = st.slider("Temperature (0 = greedy)", 0.0, 1.5, step=0.05, key=f"{mode}_temperature")
        top_p = st.slider("Top p", 0.05, 1.0, step=0.05, key=f"{mode}_top_p")
        max_new_tokens = st.slider("Max new tokens", 16, 4096, step=16, key=f"{mode}_max_new_tokens")
        repetition_penalty = st.slider("Repetition penalty", 1.0, 1.5, step=0.01, key=f"{mode}_repetition_penalty")
        loop_stop_tokens = st.slider(
            "Stop loops after (tokens, 0 = never)",
            0,
            512,
            step=32,
            key=f"{mode}_loop_stop_tokens",
            help="Stop a reply once it repeats one short block (a line, a phrase) for this many tokens; local models",
        )
    return {
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "repetition_penalty": repetition_penalty,
        "loop_stop_tokens": loop_stop_tokens,
        **thinking,
    }


def model_facts(client: Client, conversation: list[Message]) -> None:
    """Model info and the speed of the last reply."""
    info = client.info
    with st.sidebar.expander("Model", expanded=False):
        st.markdown(
            safe_markdown(
                f"**{info.name}**  \n"
                f"backend `{info.backend}` · dialect `{info.dialect}`  \n"
                f"device `{info.device}` · dtype `{info.dtype}`"
                + (f" · weights `{info.weights}`" if info.weights else "")
                + "  \n"
                f"context {info.context_length:,} tokens"
            )
        )
    last = next((m for m in reversed(conversation) if m.role == "assistant" and "tokens_per_s" in m.meta), None)
    if last is not None:
        st.sidebar.caption(
            f"Last reply: {last.meta['completion_tokens']} tokens · {last.meta['tokens_per_s']:.1f} tokens/s · "
            f"first token after {last.meta['ttft_s']:.2f} s"
        )
