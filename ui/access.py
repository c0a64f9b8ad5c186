"""The password gate: with APP_PASSWORD set, nothing else runs until it is entered."""

from __future__ import annotations

import hmac
import time

import streamlit as st

from ui.model import settings

WRONG_PASSWORD_DELAY_S = 1.0  # slows guessing


def require_password() -> None:
    """Stop the page unless this browser session has entered APP_PASSWORD."""
    password = settings().app_password
    if not password or st.session_state.get("authenticated"):
        return
    st.title("🔒 GLM Workbench")
    with st.form("login"):
        attempt = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Enter")
    if submitted:
        # Constant-time comparison; the password is never logged or put in the URL.
        if hmac.compare_digest(attempt.encode("utf-8"), password.encode("utf-8")):
            st.session_state["authenticated"] = True
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.error("Wrong password.")
    st.stop()
