"""The skeleton the three mode pages share: the open conversation and its settings,
the history, the input, and the answer → rerun tail with its reply controls.

A page builds a `ModePage`, draws its own sidebar widgets with `page.key(name)` keys
(no default values: the page restores them from the conversation), calls
`keep_settings()`, then `show_history()`, reads the input, and ends with
`respond(page.start_turn(...))`.

Settings belong to the conversation, its model among them (MODELS_FILE's, picked in the
sidebar): opening one (a link, F5, the sidebar) puts its saved settings into the
widgets, a new one starts from the page's defaults, and a change is saved with the
conversation. Every reply has the prompt inspector's switch under it (ui/inspector.py).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from glm_client import Client, Message
from glm_client.agent import Executor, run_turn
from glm_client.dialects.base import ToolSchema
from ui import model, state
from ui.conversation import AVATARS, CallProgress, StartTurn, answer, render_history
from ui.history import history_sidebar
from ui.inspector import inspect_toggle, inspector_panel
from ui.render import safe_markdown
from ui.sidebar import SAMPLING_DEFAULTS, THINKING_DEFAULTS, model_facts, sampling_controls


class ModePage:
    def __init__(self, mode: str, defaults: dict[str, Any]) -> None:
        """`defaults`: the page's settings (system_prompt and its own) and any sampling default it overrides."""
        self.mode = mode
        self.models = model.model_names()
        self._gone_model: str | None = None  # the saved model, when it is no longer offered
        self.defaults = {"model": self.models[0], **SAMPLING_DEFAULTS, **THINKING_DEFAULTS, **defaults}
        self.conversation = state.current(mode)
        self._stop_area: Any = None  # set by chat_input
        self._restore_settings()
        self.model_name = self._pick_model()
        self.client: Client = model.get_client(self.model_name)  # looked up on each run: tests replace it
        history_sidebar(self.conversation)

    @property
    def messages(self) -> list[Message]:
        return self.conversation.messages

    def key(self, name: str) -> str:
        """Every widget key of a page is `<mode>_<name>`."""
        return f"{self.mode}_{name}"

    def setting(self, name: str) -> Any:
        return st.session_state[self.key(name)]

    def _restore_settings(self) -> None:
        """Put the open conversation's settings into the widgets when it was just opened.

        A widget Streamlit forgot (the page was left, or the widget was hidden) gets its value
        back too; the others keep what the user set on this run.
        """
        conversation = self.conversation
        owner = self.key("settings_of")
        switched = st.session_state.get(owner) != conversation.id
        saved = dict(conversation.params)
        if conversation.stored and "system_prompt" not in saved:  # saved before settings were kept
            first = conversation.messages[0] if conversation.messages else None
            saved["system_prompt"] = first.content if first is not None and first.role == "system" else ""
        for name, default in self.defaults.items():
            if switched or self.key(name) not in st.session_state:
                st.session_state[self.key(name)] = saved.get(name, default)
        st.session_state[owner] = conversation.id

    def _pick_model(self) -> str:
        """The conversation's model: the sidebar's picker when there are several; a saved name no longer
        offered falls back to the default (show_history says so)."""
        key = self.key("model")
        self._gone_model = None if st.session_state[key] in self.models else st.session_state[key]
        if self._gone_model is not None:
            st.session_state[key] = self.models[0]
        if len(self.models) > 1:
            st.sidebar.selectbox("Model", self.models, key=key, help="The model that answers in this conversation")
        return str(st.session_state[key])

    def sidebar_settings(self, system_prompt_height: int | None = None) -> dict[str, Any]:
        """The system prompt and sampling widgets; returns the generation params."""
        st.sidebar.text_area("System prompt", key=self.key("system_prompt"), height=system_prompt_height)
        return sampling_controls(self.mode, self.client.info.thinking_switch)

    def keep_settings(self) -> None:
        """Save the settings with the conversation (call after every setting widget is drawn)."""
        self.conversation.keep_settings({name: self.setting(name) for name in self.defaults})
        model_facts(self.client, self.messages)

    def show_history(self, title: str, tools: list[ToolSchema] | None = None) -> None:
        """The title and every message; `tools`: what the page offers, for the prompt inspector."""
        st.title(title)
        if self.conversation.stored and self._gone_model:
            st.caption(
                safe_markdown(
                    f"This conversation was answered by `{self._gone_model}`, which is not among the models now; "
                    f"it goes on with `{self.model_name}`."
                )
            )
        render_history(self.messages, lambda index: self._inspect(index, tools or []), show_models=len(self.models) > 1)

    def _inspect(self, index: int, tools: list[ToolSchema]) -> None:
        key = self.key(f"inspect_{self.conversation.id}_{index}")
        if inspect_toggle(key):
            # The reply's own model renders its prompt when that one is loaded; loading it here could unload this one.
            written_by = self.messages[index].meta.get("model")
            client = model.loaded_client(written_by) if written_by in self.models else None
            if client is None:
                client, written_by = self.client, self.model_name
            inspector_panel(client, written_by, self.messages, index, tools, key)

    def start_turn(
        self, executor: Executor | None = None, tools: list[ToolSchema] | None = None, **params: Any
    ) -> StartTurn:
        """The page's turn: run_turn over this conversation with its model, reporting each message, stoppable."""
        return lambda on_message, cancel: run_turn(
            self.client,
            self.messages,
            executor,
            tools,
            cancel=cancel,
            on_message=on_message,
            model_name=self.model_name,
            **params,
        )

    def chat_input(self, placeholder: str, accept_file: bool = False) -> Any:
        """The input; sending while a reply streams ends that reply first (it is kept, marked stopped).

        The Stop button of a streaming reply is drawn just above it, in the pinned bottom area:
        under the reply it moved down with every line, so a click could land on the text instead.
        """
        self._stop_area = st.bottom.empty()
        return st.chat_input(placeholder, accept_file="multiple" if accept_file else False, key=self.key("input"))

    def add_user_message(self, text: str) -> None:
        self.conversation.add(Message.user(text))
        state.request_answer(self.mode)
        with st.chat_message("user", avatar=AVATARS["user"]):
            st.markdown(safe_markdown(text))

    def respond(self, start_turn: StartTurn, progress: CallProgress | None = None) -> None:
        """Answer when asked (then rerun, to draw the saved result); otherwise draw the reply controls."""
        if state.should_answer(self.mode, self.messages):
            stop_area = self._stop_area if self._stop_area is not None else st.bottom.empty()
            answer(self.conversation, start_turn, stop_area, progress, stop_key=self.key("stop"))
            st.rerun()
        self.reply_controls()

    def reply_controls(self) -> None:
        """Regenerate and Clear, drawn after the last reply (never above one that streams)."""
        if not self.messages:
            return
        left, middle, right, _ = st.columns([1, 1.3, 1, 2])
        if any(message.role == "user" for message in self.messages):
            left.button(
                "🔄 Regenerate",
                key=self.key("regenerate"),
                help="Answer the last message again (replaces the reply)",
                on_click=self._regenerate,
            )
            others = [name for name in self.models if name != self.model_name]
            if others:
                with middle.popover("🔄 Regenerate with…", help="Answer again with another model, which goes on"):
                    for name in others:
                        st.button(
                            name, key=self.key(f"regenerate_with_{name}"), on_click=self._regenerate, args=(name,)
                        )
        right.button(
            "🧹 Clear",
            key=self.key("clear"),
            help="Start a new conversation (this one stays in the list)",
            on_click=state.open_conversation,
            args=(self.mode, None),
        )

    def _regenerate(self, model_name: str | None = None) -> None:
        """Answer the last message again; with `model_name`, that model answers and stays the conversation's."""
        if model_name is not None:
            st.session_state[self.key("model")] = model_name
        if self.conversation.drop_last_reply():
            state.request_answer(self.mode)
