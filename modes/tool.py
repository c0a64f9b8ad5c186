"""Tool mode: the model calls registered Python functions (or, in manual mode, tools you describe and answer)."""

from __future__ import annotations

import streamlit as st

from glm_client import Message, ToolCall
from glm_client.agent import run_turn
from tools import get_tool_status, get_tools, load_tools_dir
from tools.adhoc import EXAMPLE, parse_tool_definitions
from tools.executor import tool_executor
from tools.workspace import tool_workdir
from ui import state
from ui.conversation import answer, call_title, render_history
from ui.history import history_sidebar
from ui.model import get_client, settings
from ui.render import safe_markdown
from ui.sidebar import model_facts, sampling_controls
from ui.workspace import session_workdir

MODE = "tool"
DEFAULT_SYSTEM_PROMPT = "Answer the following questions as best as you can. Use a tool when it helps."


@st.cache_resource(show_spinner=False)
def user_tool_errors(tools_dir: str) -> list[str]:
    """Load TOOLS_DIR once per process; a broken file is reported, the others still load."""
    return [f"{error.file.name}: {error.message}" for error in load_tools_dir(tools_dir)]


def tool_list_sidebar() -> None:
    with st.sidebar.expander("Registered tools", expanded=False):
        for status in get_tool_status():
            if status.enabled:
                st.markdown(safe_markdown(f"✅ **{status.name}** — {status.description}"))
            else:
                st.markdown(safe_markdown(f"⛔ ~~{status.name}~~ — {status.reason}"))
    for error in user_tool_errors(settings().tools_dir):
        st.sidebar.error(safe_markdown(f"Could not load tool file {error}"))


def pending_calls(messages: list[Message]) -> list[ToolCall]:
    """Calls of the last reply that no observation answers yet (manual mode)."""
    if not messages or messages[-1].role != "assistant":
        return []
    return [call for call in messages[-1].tool_calls if not call.parse_error]


client = get_client()
conversation = state.current(MODE)
messages = conversation.messages
history_sidebar(conversation)
params = sampling_controls(MODE, {"temperature": 0.2})  # tool calls are more reliable at low temperature
system_prompt = st.sidebar.text_area("System prompt", DEFAULT_SYSTEM_PROMPT, key=f"{MODE}_system_prompt")
manual = st.sidebar.toggle("Manual mode", key="tool_manual", help="Describe tools yourself and type their results")
if manual:
    definitions = st.sidebar.text_area("Tool definitions (YAML or JSON)", EXAMPLE, height=260, key="tool_definitions")
    try:
        tools = parse_tool_definitions(definitions)
    except ValueError as error:
        st.sidebar.error(str(error))
        tools = []
    executor = None
else:
    tool_list_sidebar()
    tools = get_tools()
    executor = tool_executor()
names = [tool["function"]["name"] for tool in tools]
choice = st.sidebar.selectbox(
    "Force a tool call",
    ["no (model decides)", "any tool", *names],
    key="tool_force",
    help="Constrained decoding makes the model's first reply a schema-valid call",
)
force_tool = {"no (model decides)": None, "any tool": "any"}.get(choice, choice)
model_facts(client, messages)

st.title("🛠️ Tool")
st.caption(safe_markdown(f"{len(tools)} tool(s) offered: " + (", ".join(f"`{name}`" for name in names) or "none")))
render_history(messages)

if messages and st.button("🧹 Clear", key="tool_clear", help="Start a new conversation (this one stays in the list)"):
    state.open_conversation(MODE, None)
    st.rerun()

answer_pending = False
pending = pending_calls(messages) if manual else []
if pending:
    with st.form("manual_observations"):
        st.markdown("**The model is waiting for tool results.** Type what each call returned:")
        results = {call.id: st.text_area(call_title(call), key=f"observation_{call.id}") for call in pending}
        answer_pending = st.form_submit_button("Send results")
    if answer_pending:
        for call in pending:
            messages.append(Message.observation(results[call.id], name=call.name, tool_call_id=call.id))

prompt = st.chat_input("Ask something that needs a tool", submit_mode="stop", key="tool_input")
if prompt is not None and prompt.strip():
    messages.append(Message.user(prompt))
    state.request_answer(MODE)
    with st.chat_message("user", avatar="🧑"):
        st.markdown(safe_markdown(prompt))

if answer_pending or state.should_answer(MODE, messages):
    conversation.set_system_prompt(system_prompt)
    conversation.save()
    conversation.save_params({**params, "force_tool": force_tool, "manual": manual})
    extra = {"force_tool": force_tool} if force_tool and messages[-1].role == "user" else {}
    with tool_workdir(session_workdir()):  # the shell tool works in this session's directory
        answer(
            conversation,
            run_turn(client, messages, executor, tools, max_rounds=settings().max_rounds, **params, **extra),
        )
    st.rerun()
