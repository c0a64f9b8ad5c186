"""GLM Workbench: `streamlit run app.py` (or `make run`).

Page config, navigation over the three modes, and the sidebar shared by all.
"""

from __future__ import annotations

import streamlit as st

from glm_client import ConfigError
from tools.mcp_manager import load_in_background
from ui.access import password_entered, require_password
from ui.model import settings
from ui.render import safe_markdown

st.set_page_config(page_title="GLM Workbench", page_icon="🧪", layout="wide")

pages = [
    st.Page("modes/chat.py", title="Chat", icon="💬", default=True),
    st.Page("modes/tool.py", title="Tool", icon="🛠️"),
    st.Page("modes/code_interpreter.py", title="Code Interpreter", icon="🧑‍💻"),
]
# Navigation first, hidden until the password is in: it resolves the page the URL asks for, so
# logging in from /code_interpreter lands there. Nothing of a page runs before the gate.
navigation = st.navigation(pages, position="sidebar" if password_entered() else "hidden")
require_password()
try:
    current = settings()
except ConfigError as error:  # a bad setting or MODELS_FILE: one sentence, nothing else runs
    st.error(safe_markdown(f"**A setting is wrong.** {error}"))
    st.stop()
load_in_background(current)  # MCP servers connect on a thread: a slow or dead one never blocks a page
st.sidebar.caption("GLM Workbench · models run on this machine")
navigation.run()
