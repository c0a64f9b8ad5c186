"""Sidebar of past conversations: new, open, search, rename, delete, export, import."""

from __future__ import annotations

import datetime as dt
import re

import streamlit as st

from store import from_openai_json, to_markdown, to_openai_json
from ui.render import safe_label, safe_markdown
from ui.state import OpenConversation, conversation_store, open_conversation

MAX_LISTED = 30


def history_sidebar(conversation: OpenConversation) -> None:
    mode = conversation.mode
    store = conversation_store()
    with st.sidebar.expander("Conversations", expanded=True):
        if st.button("➕ New conversation", key=f"{mode}_new", use_container_width=True):
            open_conversation(mode, None)
            st.rerun()
        query = st.text_input("Search", key=f"{mode}_search", placeholder="Search titles and messages")
        for summary in store.list(mode, search=query.strip() or None, limit=MAX_LISTED):
            current = summary.id == conversation.id
            when = dt.datetime.fromtimestamp(summary.updated_at).strftime("%Y-%m-%d %H:%M")
            # Titles come from the first message or an imported file: Markdown labels can load images.
            label = safe_label(f"{'▶ ' if current else ''}{summary.title or 'Untitled'}")
            if st.button(
                label,
                key=f"{mode}_open_{summary.id}",
                help=f"{when} · {summary.message_count} messages",
                use_container_width=True,
            ):
                open_conversation(mode, summary.id)
                st.rerun()
    with st.sidebar.expander("Import", expanded=False):
        import_box(mode)
    if conversation.id is not None:
        current_sidebar(conversation)


def current_sidebar(conversation: OpenConversation) -> None:
    store = conversation_store()
    stored = store.load(conversation.id)
    if stored is None:
        return
    with st.sidebar.expander("This conversation", expanded=False):
        title = st.text_input("Title", stored.title, key=f"{conversation.mode}_title_{stored.id}")
        if title.strip() and title != stored.title:
            store.rename(stored.id, title.strip())
        name = slug(stored.title)
        left, right = st.columns(2)
        left.download_button(
            "⬇️ Markdown",
            to_markdown(stored),
            file_name=f"{name}.md",
            mime="text/markdown",
            key=f"{conversation.mode}_md",
        )
        right.download_button(
            "⬇️ JSON",
            to_openai_json(stored),
            file_name=f"{name}.json",
            mime="application/json",
            key=f"{conversation.mode}_json",
        )
        if st.button("🗑️ Delete conversation", key=f"{conversation.mode}_delete", type="secondary"):
            store.delete(stored.id)
            open_conversation(conversation.mode, None)
            st.rerun()


def import_box(mode: str) -> None:
    upload = st.file_uploader("Import JSON (OpenAI messages)", type=["json"], key=f"{mode}_import")
    if upload is None or st.session_state.get(f"{mode}_imported") == upload.file_id:
        return
    st.session_state[f"{mode}_imported"] = upload.file_id  # the widget keeps the file: import it once
    try:
        title, _mode, messages = from_openai_json(upload.getvalue().decode("utf-8", errors="replace"))
    except ValueError as error:
        st.error(safe_markdown(f"Could not import {upload.name}: {error}"))
        return
    conversation_id = conversation_store().create_from(mode, messages, title=title)
    open_conversation(mode, conversation_id)
    st.rerun()


def slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-")[:50] or "conversation"
