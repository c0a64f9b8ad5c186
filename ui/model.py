"""The models of this process: one pool (glm_client/models.py) shared by every browser session.

Each conversation names its model (the sidebar's picker, saved with its settings); a
model loads on first use, with a status box saying what is happening.
"""

from __future__ import annotations

import streamlit as st

from glm_client import Client, ConfigError, ModelLoadError, Settings
from glm_client.models import ModelPool
from ui.render import safe_label, safe_markdown


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return Settings.from_env()


def pool() -> ModelPool:
    return _pool_for(settings())


@st.cache_resource(show_spinner=False)
def _pool_for(current: Settings) -> ModelPool:
    return ModelPool(current)


def model_names() -> list[str]:
    """The models a conversation can pick, the default first; stops the page when MODELS_FILE is bad."""
    try:
        return pool().names
    except ConfigError as error:
        _stop_with(error)
        raise  # st.stop() does not return


def get_client(name: str | None = None) -> Client:
    """The named model's client (the default's without a name), loaded if need be. Stops the page on failure."""
    try:
        models = pool()
        if name is None or models.client(name) is None:
            placeholder = st.empty()
            with placeholder.status(safe_label(f"Loading {name or 'the model'}…"), expanded=True) as status:
                client = models.get(name, status.write)
            placeholder.empty()
            return client
        return models.get(name)
    except (ModelLoadError, ConfigError) as error:
        _stop_with(error)
        raise  # st.stop() does not return


def loaded_client(name: str) -> Client | None:
    """The named model's client if it is loaded now (never loads one)."""
    return pool().client(name)


def _stop_with(error: Exception) -> None:
    st.error(safe_markdown(f"**The model could not be loaded.** {error}"))
    st.caption("Fix the setting (see the README's configuration table) and reload the page.")
    st.stop()
