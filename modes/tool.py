"""Tool mode: the model calls registered Python functions (or, in manual mode, tools you describe and answer)."""

from __future__ import annotations

import threading
from collections.abc import Generator

import streamlit as st

from glm_client import Message, ToolCall
from glm_client.agent import AgentEvent, MessageListener
from tools import get_tool_status, get_tools, load_tools_dir
from tools.adhoc import EXAMPLE, parse_tool_definitions
from tools.executor import tool_executor
from tools.mcp_client import call_context
from tools.workspace import tool_workdir
from ui import state
from ui.conversation import call_title
from ui.mcp_panel import McpCallProgress, mcp_servers_sidebar
from ui.model import settings
from ui.page import ModePage
from ui.prompts import TOOL_SYSTEM_PROMPT
from ui.render import safe_markdown
from ui.workspace import conversation_workdir

MODE = "tool"


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


def mark_unanswered(page: ModePage) -> None:
    """Manual mode: a new message leaves no call without a result (a template would reject the history)."""
    for call in pending_calls(page.messages):
        page.conversation.add(
            Message.observation(
                "No result was given: the user wrote a new message instead.",
                name=call.name,
                tool_call_id=call.id,
                is_error=True,
            )
        )


page = ModePage(
    MODE,
    {
        "system_prompt": TOOL_SYSTEM_PROMPT,
        "temperature": 0.2,  # tool calls are more reliable at low temperature
        "manual": False,
        "definitions": EXAMPLE,
        "force": None,
    },
)
params = page.sidebar_settings()
manual = st.sidebar.toggle("Manual mode", key=page.key("manual"), help="Describe tools yourself and type their results")
if manual:
    definitions = st.sidebar.text_area("Tool definitions (YAML or JSON)", height=260, key=page.key("definitions"))
    try:
        tools = parse_tool_definitions(definitions)
    except ValueError as error:
        st.sidebar.error(str(error))
        tools = []
    executor = None
else:
    tool_list_sidebar()
    tools = get_tools()
    mcp_servers_sidebar(page.client, tools)
    executor = tool_executor()
names = [tool["function"]["name"] for tool in tools]
choices = [None, "any", *names]
if page.setting("force") not in choices:  # saved with a tool that is not offered now
    st.session_state[page.key("force")] = None
force_tool = st.sidebar.selectbox(
    "Force a tool call",
    choices,
    format_func=lambda choice: {None: "no (model decides)", "any": "any tool"}.get(choice, choice),
    key=page.key("force"),
    help="Constrained decoding makes the model's first reply a schema-valid call",
)
page.keep_settings()

page.show_history("🛠️ Tool", tools)
st.caption(safe_markdown(f"{len(tools)} tool(s) offered: " + (", ".join(f"`{name}`" for name in names) or "none")))

pending = pending_calls(page.messages) if manual else []
if pending:
    with st.form(page.key("observations")):
        st.markdown("**The model is waiting for tool results.** Type what each call returned:")
        results = {call.id: st.text_area(call_title(call), key=page.key(f"observation_{call.id}")) for call in pending}
        if st.form_submit_button("Send results"):
            for call in pending:
                page.conversation.add(Message.observation(results[call.id], name=call.name, tool_call_id=call.id))
            state.request_answer(MODE)

prompt = page.chat_input("Ask something that needs a tool")
if prompt is not None and prompt.strip():
    mark_unanswered(page)
    page.add_user_message(prompt)


def start_turn(on_message: MessageListener, cancel: threading.Event) -> Generator[AgentEvent, None, None]:
    # The forced call is the answer to a user message, not to tool results.
    forced = {"force_tool": force_tool} if force_tool and page.messages[-1].role == "user" else {}
    with (
        tool_workdir(conversation_workdir(page.conversation.id)),  # the shell tool works in this conversation's files
        call_context(cancel, progress.report),  # Stop cancels an MCP call; its progress shows in the status box
    ):
        yield from page.start_turn(executor, tools, max_rounds=settings().max_rounds, **params, **forced)(
            on_message, cancel
        )


progress = McpCallProgress()
page.respond(start_turn, progress)
