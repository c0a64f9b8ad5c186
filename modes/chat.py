"""Chat mode: a plain conversation with the model, streamed, stoppable, regenerable."""

from __future__ import annotations

import streamlit as st

from glm_client import Message
from glm_client.agent import run_turn
from ui import state
from ui.conversation import answer, render_history
from ui.history import history_sidebar
from ui.model import get_client
from ui.render import safe_markdown
from ui.sidebar import model_facts, sampling_controls

MODE = "chat"
DEFAULT_SYSTEM_PROMPT = "You are a helpful, concise assistant."

client = get_client()
conversation = state.current(MODE)
messages = conversation.messages
history_sidebar(conversation)
params = sampling_controls(MODE)
system_prompt = st.sidebar.text_area("System prompt", DEFAULT_SYSTEM_PROMPT, key=f"{MODE}_system_prompt")
model_facts(client, messages)

st.title("💬 Chat")
render_history(messages)

regenerate = False
if any(m.role == "user" for m in messages):
    left, right, _ = st.columns([1, 1, 4])
    regenerate = left.button("🔄 Regenerate", key="chat_regenerate", help="Answer the last message again")
    if right.button("🧹 Clear", key="chat_clear", help="Start a new conversation (this one stays in the list)"):
        state.open_conversation(MODE, None)
        st.rerun()

prompt = st.chat_input("Message the model", submit_mode="stop", key="chat_input")
if prompt is not None and prompt.strip():
    messages.append(Message.user(prompt))
    state.request_answer(MODE)
    with st.chat_message("user", avatar="🧑"):
        st.markdown(safe_markdown(prompt))
elif regenerate:
    state.drop_last_reply(conversation)
    state.request_answer(MODE)
    st.rerun()  # redraw without the old reply, then answer below

if state.should_answer(MODE, messages):
    conversation.set_system_prompt(system_prompt)
    conversation.save()
    conversation.save_params(params)
    answer(conversation, run_turn(client, messages, **params))
    st.rerun()
