"""This browser session's working directory, shared by its Code Interpreter kernel and the shell tool.

It is removed when Streamlit ends the session (after its reconnect grace period); workspaces
left by an app that was killed are removed at the next start, once older than the reaper period.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import streamlit as st

from ui.model import settings

# A workspace untouched this long belongs to no live session (kernels idle out after 30 min).
STALE_WORKSPACE_S = 30 * 60


def workspaces_root() -> Path:
    return settings().data_dir / "workspaces"


@st.cache_resource(
    scope="session",
    show_spinner=False,
    validate=lambda path: path.parent == workspaces_root(),  # DATA_DIR unchanged (tests change it)
    on_release=lambda path: shutil.rmtree(path, True),
)
def session_workdir() -> Path:
    """DATA_DIR/workspaces/<random id>: what code and commands of this session see as /mnt/data."""
    sweep_stale_workspaces()
    path = workspaces_root() / uuid.uuid4().hex
    path.mkdir(parents=True, exist_ok=True)
    return path


@st.cache_resource(show_spinner=False)
def sweep_stale_workspaces() -> list[Path]:
    """Once per process: remove workspaces older than STALE_WORKSPACE_S (another app process may share DATA_DIR)."""
    return remove_stale(workspaces_root(), STALE_WORKSPACE_S)


def remove_stale(root: Path, max_age_s: float, now: float | None = None) -> list[Path]:
    """Remove the folders of `root` whose last change is older than `max_age_s`; returns them."""
    cutoff = (now or time.time()) - max_age_s
    removed = []
    for path in root.iterdir() if root.is_dir() else []:
        if path.is_dir() and not path.is_symlink() and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
