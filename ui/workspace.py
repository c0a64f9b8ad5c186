"""Each conversation's working directory.

DATA_DIR/workspaces/<conversation id> is what the Code Interpreter's code and the shell
tool see as /mnt/data: uploads and produced files survive F5 and restarts, and go when
the conversation is deleted (ui.kernels runs the kernel in it).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import streamlit as st

from store import is_conversation_id
from ui.model import settings
from ui.state import conversation_store

# A workspace of no stored conversation, untouched this long, is a leftover (a new conversation
# whose first message never came, in an app that was killed): removed at the next start.
STALE_WORKSPACE_S = 30 * 60


def workspaces_root() -> Path:
    return settings().data_dir / "workspaces"


def conversation_workdir(conversation_id: str) -> Path:
    """DATA_DIR/workspaces/<id>, created on first use."""
    if not is_conversation_id(conversation_id):  # it names a folder: never a path from elsewhere
        raise ValueError(f"Not a conversation id: {conversation_id!r}.")
    path = workspaces_root() / conversation_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_workdir(conversation_id: str) -> None:
    """Delete a conversation's files (the conversation was deleted)."""
    if is_conversation_id(conversation_id):
        shutil.rmtree(workspaces_root() / conversation_id, ignore_errors=True)


def remove_if_unused(conversation_id: str) -> None:
    """Drop the empty directory a never-saved conversation left (the user opened the page, wrote nothing)."""
    path = workspaces_root() / conversation_id
    if conversation_store().load(conversation_id) is None and path.is_dir() and not any(path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)


@st.cache_resource(show_spinner=False)
def sweep_orphan_workspaces() -> list[Path]:
    """Once per process: remove workspaces of no stored conversation, older than STALE_WORKSPACE_S."""
    known = {summary.id for summary in conversation_store().list(limit=1_000_000)}
    return remove_orphans(workspaces_root(), known, STALE_WORKSPACE_S)


def remove_orphans(root: Path, known: set[str], max_age_s: float, now: float | None = None) -> list[Path]:
    """Remove the folders of `root` not named in `known` whose last change is older than `max_age_s`."""
    cutoff = (now or time.time()) - max_age_s
    removed = []
    for path in root.iterdir() if root.is_dir() else []:
        if path.name in known or path.is_symlink() or not path.is_dir() or path.stat().st_mtime >= cutoff:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
