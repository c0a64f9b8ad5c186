"""The one model of this process, loaded once and shared by every browser session."""

from __future__ import annotations

import threading

import streamlit as st

from glm_client import Client, ConfigError, ModelLoadError, Settings, load_client
from ui.render import safe_markdown

_loading = threading.Lock()


@st.cache_resource(show_spinner=False)
def _loaded_clients() -> dict[Settings, Client]:
    # A process-wide holder rather than caching load_client itself: the load has to
    # report progress into the page, which a cached function may not do.
    return {}


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return Settings.from_env()


def get_client() -> Client:
    """The loaded client; while loading, a status box says what is happening. Stops the page on failure."""
    try:
        current = settings()
        clients = _loaded_clients()
        if current not in clients:
            placeholder = st.empty()
            with placeholder.status("Loading the model…", expanded=True) as status, _loading:
                if current not in clients:
                    clients[current] = load_client(current, status.write)
            placeholder.empty()
        return clients[current]
    except (ModelLoadError, ConfigError) as error:
        st.error(safe_markdown(f"**The model could not be loaded.** {error}"))
        st.caption("Fix the setting (see the README's configuration table) and reload the page.")
        st.stop()
        raise  # st.stop() does not return
