"""The Tool page's "MCP servers" section: each server's state and tools; add, remove, enable, reconnect.

Every change is saved to the MCP config file (MCP_CONFIG, else DATA_DIR/mcp.json) and applied
to the live servers (tools/mcp_manager.py). The prompt-token cost of the enabled tool list is
shown where the model's dialect can count it: long tool lists overflow small contexts.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from glm_client import Client, Message
from tools.mcp_config import McpConfigError, ServerConfig, config_path, parse_server, read_config
from tools.mcp_manager import (
    ServerStatus,
    default_servers,
    remove_server,
    save_server,
    set_server_enabled,
    set_tool_enabled,
)
from ui.conversation import CallProgress
from ui.model import settings
from ui.render import safe_markdown

STATE_ICONS = {"connected": "🟢", "failed": "🔴", "disabled": "⚪", "connecting": "⏳"}


def mcp_servers_sidebar(client: Client, offered: list[dict[str, Any]]) -> None:
    path = config_path(settings(), for_writing=True)
    assert path is not None
    with st.sidebar.expander("MCP servers", expanded=False):
        try:
            configs = read_config(path)
        except McpConfigError as error:
            st.error(str(error))
            return
        statuses = {status.name: status for status in default_servers.statuses()}
        for name, config in configs.items():
            server_block(path, config, statuses.get(name))
        add_server_form(path, configs)
        tokens = tool_list_tokens(client, offered)
        if tokens is not None:
            st.caption(f"The {len(offered)} enabled tool(s) cost {tokens} prompt tokens.")
        else:
            st.caption("This model's dialect cannot count the tool list's prompt tokens.")


def server_block(path: Path, config: ServerConfig, status: ServerStatus | None) -> None:
    state = status.state if status is not None else ("disabled" if not config.enabled else "connecting")
    target = " ".join([config.command or "", *config.args]) if config.command else config.url
    st.markdown(safe_markdown(f"{STATE_ICONS.get(state, '')} **{config.name}** · {state} · `{target}`"))
    if status is not None and status.error:
        st.error(safe_markdown(f"{config.name}: {status.error}"))
        if status.stderr_tail:
            st.code(status.stderr_tail, language="text")
    for problem in status.skipped if status is not None else ():
        st.warning(safe_markdown(problem))
    enabled = st.checkbox("Enabled", value=config.enabled, key=f"mcp_enabled_{config.name}")
    if enabled != config.enabled:
        with st.spinner(f"{'Connecting' if enabled else 'Disconnecting'} {config.name}…"):
            set_server_enabled(path, config.name, enabled)
        st.rerun()
    left, right = st.columns(2)
    if left.button("Reconnect", key=f"mcp_reconnect_{config.name}", disabled=not config.enabled):
        with st.spinner(f"Connecting {config.name}…"):
            save_server(path, config)
        st.rerun()
    if right.button("Remove", key=f"mcp_remove_{config.name}"):
        remove_server(path, config.name)
        st.rerun()
    if status is None or not status.connected:
        return
    for registered in status.tools:
        tool = default_servers.registry.get(registered)
        if tool is None:
            continue
        on = st.checkbox(registered, value=tool.enabled, key=f"mcp_tool_{registered}", help=tool.description)
        if on != tool.enabled:
            set_tool_enabled(path, config.name, registered, on)
            st.rerun()


def add_server_form(path: Path, configs: dict[str, ServerConfig]) -> None:
    with st.form("mcp_add_server", clear_on_submit=False):
        st.markdown("**Add a server**")
        name = st.text_input("Name", key="mcp_new_name", placeholder="time")
        target = st.text_input(
            "Command or URL", key="mcp_new_target", placeholder="uvx mcp-server-time  or  http://127.0.0.1:9000/mcp"
        )
        timeout = st.number_input("Timeout (s)", min_value=1.0, value=60.0, step=5.0, key="mcp_new_timeout")
        if not st.form_submit_button("Add server"):
            return
    try:
        config = server_from_form(name.strip(), target.strip(), float(timeout))
    except (McpConfigError, ValueError) as error:
        st.error(str(error))
        return
    if config.name in configs:
        st.error(f"A server named {config.name!r} exists already; remove it first.")
        return
    with st.spinner(f"Connecting {config.name}…"):
        save_server(path, config)
    st.rerun()


def server_from_form(name: str, target: str, timeout: float) -> ServerConfig:
    """A config entry from the form: a URL, or a command line split as a shell would."""
    if not name or not target:
        raise ValueError("A server needs a name and a command or URL.")
    if target.startswith(("http://", "https://")):
        return parse_server(name, {"url": target, "timeout": timeout}, "New server")
    try:
        command, *args = shlex.split(target)
    except ValueError as error:
        raise ValueError(f"The command line cannot be split: {error}.") from None
    return parse_server(name, {"command": command, "args": args, "timeout": timeout}, "New server")


def tool_list_tokens(client: Client, tools: list[dict[str, Any]]) -> int | None:
    """How many prompt tokens the tool list adds, where the client's dialect can encode a prompt."""
    encode = getattr(getattr(client, "dialect", None), "encode", None)
    if encode is None or not tools:
        return 0 if encode is not None else None
    lock = getattr(getattr(client, "engine", None), "tokenizer_lock", None) or contextlib.nullcontext()
    probe = [Message.user("Hello")]
    try:
        with lock:
            return len(encode(probe, tools)) - len(encode(probe, None))
    except Exception:  # a dialect that cannot render these tools: no figure rather than a broken page
        return None


class McpCallProgress(CallProgress):
    """The call's status line, also showing the MCP server's progress notifications."""

    def __init__(self) -> None:
        super().__init__()
        self._context = get_script_run_ctx()

    def report(self, progress: float, total: float | None, message: str | None) -> None:
        """Called on the thread that waits for the MCP call (tools/mcp_client.py), not the script's."""
        if self._slot is None:
            return
        add_script_run_ctx(threading.current_thread(), self._context)
        share = f"{progress:g}/{total:g}" if total else f"{progress:g}"
        with contextlib.suppress(Exception):  # the page may have moved on; progress is best effort
            self._slot.caption(safe_markdown(f"⏳ {share}" + (f" — {message}" if message else "")))
