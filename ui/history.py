"""Sidebar of past conversations: new, open, search, rename, delete, export, import."""

from __future__ import annotations

import datetime as dt
import re

import streamlit as st

from store import from_openai_json, to_markdown, to_openai_json
from ui.render import safe_label, safe_markdown
from ui.state import OpenConversation, conversation_store, open_conversation
from ui.workspace import remove_workdir

MAX_LISTED = 50
LIST_HEIGHT_PX = 260  # the list scrolls, so the settings below it stay in reach


def day_heading(timestamp: float, today: dt.date | None = None) -> str:
    """Today, Yesterday, or the date: the list is grouped by the day a conversation last changed."""
    day = dt.datetime.fromtimestamp(timestamp).date()
    today = today or dt.date.today()
    if day == today:
        return "Today"
    if day == today - dt.timedelta(days=1):
        return "Yesterday"
    return day.strftime("%a %d %b %Y")


def history_sidebar(conversation: OpenConversation) -> None:
    mode = conversation.mode
    with st.sidebar.expander("Conversations", expanded=True):
        st.button(
            "➕ New conversation", key=f"{mode}_new", width="stretch", on_click=open_conversation, args=(mode, None)
        )
        query = st.text_input("Search", key=f"{mode}_search", placeholder="Search titles and messages")
        summaries = conversation_store().list(mode, search=query.strip() or None, limit=MAX_LISTED)
        with st.container(height=LIST_HEIGHT_PX if len(summaries) > 5 else "content", border=False):
            heading = None
            for summary in summaries:
                if (day := day_heading(summary.updated_at)) != heading:
                    st.caption(day)
                    heading = day
                when = dt.datetime.fromtimestamp(summary.updated_at).strftime("%H:%M")
                # Titles come from the first message or an imported file: Markdown labels can load images.
                title = safe_label(summary.title or "Untitled")
                st.button(
                    f"{when} · {title}",
                    key=f"{mode}_open_{summary.id}",
                    help=f"{summary.message_count} messages",
                    type="primary" if summary.id == conversation.id else "secondary",
                    width="stretch",
                    on_click=open_conversation,
                    args=(mode, summary.id),
                )
    with st.sidebar.expander("Import", expanded=False):
        import_box(mode)
    if conversation.stored:
        current_sidebar(conversation)


def current_sidebar(conversation: OpenConversation) -> None:
    store = conversation_store()
    stored = store.load(conversation.id)
    if stored is None:
        return
    mode = conversation.mode
    with st.sidebar.expander("This conversation", expanded=False):
        title = st.text_input("Title", stored.title, key=f"{mode}_title_{stored.id}")
        if title.strip() and title.strip() != stored.title:
            store.rename(stored.id, title.strip())
            st.rerun()  # the list and the exports show the new title at once
        name = slug(stored.title)
        st.download_button(
            "⬇️ Export as Markdown",
            to_markdown(stored),
            file_name=f"{name}.md",
            mime="text/markdown",
            key=f"{mode}_md",
            width="stretch",
        )
        st.download_button(
            "⬇️ Export as JSON",
            to_openai_json(stored),
            file_name=f"{name}.json",
            mime="application/json",
            key=f"{mode}_json",
            width="stretch",
        )
        with st.popover("🗑️ Delete", width="stretch"):
            st.markdown("Delete this conversation and its working-directory files? This cannot be undone.")
            st.button(
                "Delete for good",
                key=f"{mode}_delete",
                type="primary",
                on_click=delete_conversation,
                args=(conversation,),
            )


def delete_conversation(conversation: OpenConversation) -> None:
    conversation_store().delete(conversation.id)
    remove_workdir(conversation.id)
    open_conversation(conversation.mode, None)


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
