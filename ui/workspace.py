"""This browser session's working directory, shared by its Code Interpreter kernel and the shell tool."""

from __future__ import annotations

import uuid
from pathlib import Path

import streamlit as st

from ui.model import settings


@st.cache_resource(scope="session", show_spinner=False)
def session_workdir() -> Path:
    """DATA_DIR/workspaces/<random id>: what code and commands of this session see as /mnt/data."""
    path = settings().data_dir / "workspaces" / uuid.uuid4().hex
    path.mkdir(parents=True, exist_ok=True)
    return path
