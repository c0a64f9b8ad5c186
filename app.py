"""GLM Workbench: `streamlit run app.py` (or `make run`).

Page config, navigation over the three modes, and the sidebar shared by all.
"""

from __future__ import annotations

import streamlit as st

from ui.access import require_password

st.set_page_config(page_title="GLM Workbench", page_icon="🧪", layout="wide")
require_password()

pages = [
    st.Page("modes/chat.py", title="Chat", icon="💬", default=True),
    st.Page("modes/tool.py", title="Tool", icon="🛠️"),
    st.Page("modes/code_interpreter.py", title="Code Interpreter", icon="🧑‍💻"),
]
navigation = st.navigation(pages)
st.sidebar.caption("GLM Workbench · models run on this machine")
navigation.run()
